(** Neural-network primitives on the vendor's optimized libraries: the OCaml bindings of
    neatml ([include/neatml.h]).

    A {!Device.t} is a CPU (oneDNN and OpenMP loops) or a GPU (cuBLASLt, cuDNN and own
    kernels). {!Tensor.t}s are float32, row-major, of 0 to 4 dimensions; images are NCHW.
    Operations are {e recorded} into a {!Cmdbuf.t} and run when it is committed; committing
    the same buffer again replays it on the tensors' current contents (on CUDA, as one
    CUDA-graph launch), which is how a training step is written once and run many times:

    {[
      let dev = Gpu.Device.create () in
      let x = Gpu.Tensor.of_array dev [| 2; 3 |] [| 1.; 2.; 3.; 4.; 5.; 6. |] in
      let w = Gpu.Tensor.of_array dev [| 1; 3 |] [| 1.; 1.; 1. |] in
      let y = Gpu.Tensor.create dev [| 2; 1 |] in
      let cb = Gpu.Cmdbuf.create dev in
      Gpu.linear_forward cb ~act:Gpu.Relu x w ~out:y;
      Gpu.Cmdbuf.run cb;
      Gpu.Tensor.to_array y (* [| 6.; 15. |] *)
    ]}

    {b Arguments.} Every op takes the command buffer first, then its descriptor and
    activation, then its input tensors, positional in the order of the C call; the tensors
    it writes are labelled: [~out], or [~dx], [~dw], [~db], [~dlogits] for gradients. C
    defaults (NULL tensors, constants) are optional labelled arguments.

    {b Errors.} Every failing call raises {!Error} with a {!Status.t} and the library's
    message (which names the call, the argument and the shapes). Recording validates
    everything; {!Cmdbuf.commit} and {!Cmdbuf.wait} report only what can happen at run time.
    An op that fails at run time (an out-of-range label, an invalid learning rate, memory
    for its scratch) stops the rest of its submission: the ops before it have run, it and
    the ops after it leave their outputs (host copies included) untouched. {!Cmdbuf.wait}
    or {!Device.synchronize} then raises with a message
    ["<function> (op <i> of <n> in the command buffer): <why>"]. The buffer stays
    committed: once the cause is fixed, committing it again replays every op.
    The statuses live in their own module, so that [open Neatml.Gpu] shadows none of
    Stdlib's exceptions ([Invalid_argument], [Out_of_memory], ...). It does bring the
    exception [Error] into scope beside [result]'s constructor [Error]; where the expected
    type is known, OCaml picks the right one.

    {b Identity.} Devices, tensors, command buffers and comms compare and hash by identity: [=],
    [compare], [Hashtbl.hash] and the [equal], [compare], [hash] of each module read an id
    fixed at creation, so they give the same answers before and after [free] (a freed tensor
    still equals itself and stays findable in a [Hashtbl]).

    {b Memory.} Tensors, command buffers, comms and devices are released by the GC; [free]
    releases at once and is idempotent; a freed object used again raises
    [Error (Invalid_handle, _)]. A tensor or command buffer keeps its device alive, and a
    command buffer keeps alive every tensor, comm and host Bigarray recorded into it until
    {!Cmdbuf.reset}. Releasing a tensor or a command buffer never waits for the device:
    committed work holds what it uses, and its memory returns to the device when that work
    completes. Each tensor counts its bytes against its device's GC budget (see
    {!Device.create}), so the GC runs a major cycle about once per budget of tensors
    allocated. Finalizers never wait for the device: those of tensors and command buffers
    release them at once; what would wait (a device, whose release waits for its work; a
    comm, whose release waits for its device's work; a
    command buffer whose work may still write host memory; the list of what a buffer keeps,
    which cannot be dropped inside the GC; an object finalized while its device is being
    freed) goes on a list that the next call which may wait for that device anyway (device,
    tensor and command-buffer creation, {!Cmdbuf.wait}, {!Cmdbuf.reset},
    {!Device.synchronize}, {!Device.trim}, {!Tensor.read}, {!Tensor.write},
    {!Device.free}) releases first, as {!collect} does at once.

    {b Threads.} The runtime lock is released while a call waits for the device or may take
    long (device creation, tensor and command-buffer creation, comm creation and
    {!Comm.free}, commit, wait, reset,
    synchronize, trim, {!Tensor.read} and {!Tensor.write}, {!Device.free}, the
    {!Cmdbuf.free} of a buffer that copies to host memory, {!collect}), so other OCaml
    threads run meanwhile. A device and its objects should be used from one thread at a
    time. *)

(** {1 Errors} *)

(** The error codes of [neat_status]. *)
module Status : sig
  (** In the C order ([NEAT_ERR_INVALID_ARGUMENT] first). *)
  type t =
    | Invalid_argument  (** a bad option value, an aliasing output, a committed buffer *)
    | Shape_mismatch  (** shapes that do not fit together; the message gives them *)
    | Dtype_mismatch  (** element types an op does not take together (see {!Dtype}) *)
    | Device_mismatch  (** tensors or command buffer of different devices *)
    | Unsupported  (** the device's backend lacks the op, or was not built *)
    | Out_of_memory  (** the device (or the host, for bookkeeping) has no memory left *)
    | Invalid_handle  (** a freed tensor, command buffer or device *)
    | Backend_error  (** the vendor library or the driver failed *)
    | Internal  (** a bug of the library *)
    | Timeout  (** a collective's peers did not answer within the comm's timeout *)

  val to_string : t -> string
  (** The C name of the status, from [neat_status_string], e.g.
      ["NEAT_ERR_SHAPE_MISMATCH"]. *)
end

exception Error of Status.t * string
(** [Error (status, message)]: what the failing call returned and [neat_last_error ()]. *)

val version : unit -> int * int * int
(** [(major, minor, patch)] of the C library linked. Loading the bindings fails if its
    major.minor differs from the header they were compiled against, or if it has another
    number of backends than {!Backend.t}. *)

val collect : unit -> unit
(** Release now, with the runtime lock released, what the GC has finalized and could not
    release itself (of every device: see {b Memory} above). This may wait for the devices'
    committed work. It is never needed for correctness: the next call on an object's device
    that may wait releases it anyway. Call it after [Gc.full_major ()] to give every
    device's memory back at once. *)

(** {1 Devices} *)

(** Backends ([neat_backend]); the names and the parsing are the library's
    ([neat_backend_name], [neat_backend_from_name]). *)
module Backend : sig
  (** In the order of the C values. *)
  type t =
    | Auto  (** the first that opens of CUDA, Metal, CPU, or [$NEATML_BACKEND] *)
    | Cpu
    | Cuda
    | Metal

  val to_string : t -> string
  (** The library's name: ["auto"], ["cpu"], ["cuda"], ["metal"]. *)

  val of_string : string -> t
  (** The backend of a name as {!to_string} gives it, in any case.
      @raise Error [Invalid_argument] for another name (the message lists the known ones). *)

  val of_string_opt : string -> t option
  (** {!of_string}, [None] for an unknown name. *)

  val is_built : t -> bool
  (** Whether the backend was built into the library (it may still find no device); [Auto]
      counts as built. *)
end

(** How products are computed ([neat_math_mode]). *)
type math_mode =
  | Strict  (** float32 products and sums: the default *)
  | Tf32  (** TensorFloat-32 products where the hardware has them *)

module Device : sig
  type t
  (** A device. Compared and hashed by identity (see {b Identity} above). *)

  type info = {
    backend : Backend.t;  (** never [Auto] *)
    index : int;
    name : string;  (** e.g. ["NVIDIA H100 80GB HBM3"] or the CPU model *)
    total_memory : int;  (** bytes the device has (host RAM for the CPU) *)
    num_threads : int;  (** CPU: worker threads; GPU: multiprocessors *)
    math_mode : math_mode;
    selection : string;
        (** opened by [Auto]: why each backend tried before this one did not open, e.g.
            ["cuda: no CUDA device: ..."]; [""] otherwise *)
  }

  type memory_stats = {
    in_use : int;  (** bytes held by live tensors and running command buffers *)
    reserved : int;  (** in use plus cached for reuse *)
    peak : int;  (** highest [in_use] since creation or {!reset_peak} *)
    limit : int;  (** [reserved] never exceeds it (see {!set_memory_limit}) *)
  }

  val create : ?backend:Backend.t -> ?index:int -> ?gc_budget:int -> unit -> t
  (** [create ?backend ?index ?gc_budget ()] opens device [index] (default 0) of [backend]
      (default [Auto]). [gc_budget] is the bytes of tensors the GC lets be allocated on the
      device per major cycle (the [max] of [caml_alloc_custom]): default a quarter of the
      device's memory, 1 GiB when unknown; a smaller one collects dropped tensors sooner, at
      the cost of more collections.
      @raise Error [Unsupported] when that backend was not built or has no such device;
      [Invalid_argument] for a negative index or one past a C [int], a bad
      [$NEATML_BACKEND] or a [gc_budget] that is not positive; [Backend_error],
      [Out_of_memory]. *)

  val gc_budget : t -> int
  (** The device's GC budget in bytes (see {!create}). *)

  val info : t -> info
  (** What the device is. @raise Error [Invalid_handle] after {!free}. *)

  val memory_stats : t -> memory_stats
  (** The device's memory pool. @raise Error [Invalid_handle] after {!free}. *)

  val reset_peak : t -> unit
  (** Set [peak] to [in_use]. @raise Error [Invalid_handle] after {!free}. *)

  val trim : t -> unit
  (** Give the device's cached, unused memory back to the system.
      @raise Error [Invalid_handle] after {!free}. *)

  val set_memory_limit : t -> int -> unit
  (** [set_memory_limit dev bytes] caps the memory the device's pool may take from the
      system (tensors, scratch and cache together); [0] restores the default, what the OS
      (cgroup limits included) or the driver reported free when the device was opened. An
      allocation past the limit first gives the cache back, then fails with
      [Error (Out_of_memory, _)] (the message mentions the limit): at creation for tensors
      ({!Tensor.create} collects garbage and tries once more first), at {!Cmdbuf.wait},
      naming the op, for the scratch an op takes when it first runs. A limit below what is
      in use already only stops further growth.
      @raise Error [Invalid_argument] (negative), [Invalid_handle] after {!free}. *)

  val set_math_mode : t -> math_mode -> unit
  (** For work recorded from now on; buffers recorded earlier keep their mode.
      @raise Error [Invalid_handle] after {!free}. *)

  val synchronize : t -> unit
  (** Wait for every committed command buffer of the device.
      @raise Error the first failure of an op (see {b Errors} above) that no
      {!Cmdbuf.wait} has reported yet, which it then forgets; [Backend_error] for a failure
      of the device itself; [Invalid_handle] after {!free}. *)

  val free : t -> unit
  (** Wait for the device's work and release it, with every tensor and command buffer of it
      still alive (they raise [Error (Invalid_handle, _)] afterwards), after what the GC
      handed over of it. Idempotent. *)

  val equal : t -> t -> bool
  (** The same device (identity; the same answer after {!free}). *)

  val compare : t -> t -> int
  (** A total order on devices, by creation; agrees with [Stdlib.compare]. *)

  val hash : t -> int
  (** A hash fixed at creation; equals [Hashtbl.hash]. *)
end

(** {1 Tensors} *)

type float32_array = (float, Bigarray.float32_elt, Bigarray.c_layout) Bigarray.Genarray.t
(** Host data: a C-layout float32 Bigarray of any number of dimensions. *)

(** Element types ([neat_dtype]). Half types are storage: every op computes in float32 and
    rounds its result once (to nearest, ties to even). Which ops take which types, and
    which each backend runs, is written at [neat_dtype] in neatml.h (the CPU and CUDA run every op
    but the losses on half tensors; the optimizers take float32, their mixed forms
    ({!sgd_update_mixed}, {!adam_update_mixed}) a gradient and a weights' copy of any type;
    the host copies and the collectives take float32; Metal runs float32 and f16, and no op
    on bf16: MPS has no bfloat16 type in the macOS 12 SDK). *)
module Dtype : sig
  type t = F32 | Bf16 | F16

  val to_string : t -> string
  (** ["f32"], ["bf16"], ["f16"]. *)

  val size : t -> int
  (** Bytes per element: 4, 2, 2. *)
end

module Tensor : sig
  type t
  (** A tensor. Compared and hashed by identity (see {b Identity} above). *)

  val create : ?dtype:Dtype.t -> Device.t -> int array -> t
  (** [create ?dtype dev shape]: a tensor of 0 to 4 dimensions whose elements are of type
      [dtype] (default [F32]), contents {e undefined}: the
      device's memory is reused, so a new tensor may hold an old tensor's values (use
      {!zeros} for state an op reads before writing it). When the device is out of memory,
      the garbage is collected (two full major collections, so that the tensors of command
      buffers dropped without {!Cmdbuf.free} go too) and the creation is tried once more.
      @raise Error [Invalid_argument] (more than 4 dimensions, a negative size),
      [Out_of_memory], [Invalid_handle] (a freed device). *)

  val zeros : ?dtype:Dtype.t -> Device.t -> int array -> t
  (** [zeros ?dtype dev shape]: {!create} with every element 0 ([neat_tensor_create_zeros]); for
      optimizer state (velocity, moments) and accumulated gradients. Waits for the device's
      committed work. Raises as {!create}. *)

  val of_bigarray : Device.t -> float32_array -> t
  (** A tensor of the Bigarray's shape (0 to 4 dimensions) holding a copy of its data.
      Raises as {!create}. *)

  val to_bigarray : t -> float32_array
  (** A copy of the tensor in a new Bigarray of its shape, once committed work is done.
      @raise Error [Invalid_handle] (freed), [Backend_error]. *)

  val of_array : Device.t -> int array -> float array -> t
  (** [of_array dev shape data]: [data] in row-major order.
      @raise Error [Shape_mismatch] when [data] has not as many elements as [shape] holds;
      as {!create} otherwise. *)

  val to_array : t -> float array
  (** The elements in row-major order. Raises as {!to_bigarray}. *)

  val write : t -> float32_array -> unit
  (** Copy host data into the tensor once the committed work that uses the tensor has
      completed (it waits for that work). The element counts must be equal (the shapes may
      differ: the copy is flat); a half tensor gets each value rounded to its type. In a
      loop, record {!copy_from_host} into the step's buffer
      instead: it waits for nothing.
      @raise Error [Shape_mismatch] (counts differ), [Invalid_handle], [Backend_error]. *)

  val write_array : t -> float array -> unit
  (** {!write} from a float array. *)

  val read : t -> float32_array -> unit
  (** Copy the tensor into host data; same rules and errors as {!write} ({!copy_to_host}
      records it into a buffer instead). *)

  val dtype : t -> Dtype.t
  (** The element type (a view keeps its tensor's). @raise Error [Invalid_handle]. *)

  val write_raw : t -> (_, _, Bigarray.c_layout) Bigarray.Genarray.t -> unit
  (** Copy the Bigarray's bytes into the tensor as they are: for a half tensor, its 16-bit
      patterns (an [int16_unsigned] Bigarray), in the host's byte order. Waits as {!write}.
      @raise Error [Shape_mismatch] unless the byte counts are equal; as {!write}. *)

  val read_raw : t -> (_, _, Bigarray.c_layout) Bigarray.Genarray.t -> unit
  (** The tensor's bytes into the Bigarray; as {!write_raw}. *)

  val shape : t -> int array
  (** The sizes, outermost first ([[||]] for a scalar). @raise Error [Invalid_handle]. *)

  val numel : t -> int
  (** The element count. @raise Error [Invalid_handle]. *)

  val view : t -> int array -> t
  (** A tensor on the same memory with another shape of the same element count (the
      [[|n; 64; 7; 7|]] output of a convolution seen as [[|n; 3136|]]). The memory lives
      until the last tensor on it is released.
      @raise Error [Shape_mismatch] (another element count), [Invalid_argument],
      [Invalid_handle]. *)

  val device : t -> Device.t
  (** The device the tensor lives on. *)

  val free : t -> unit
  (** Release now; idempotent. Never waits: committed work that uses the tensor keeps its
      memory until it completes. *)

  val equal : t -> t -> bool
  (** The same tensor (identity; a view is another tensor; the same answer after {!free}). *)

  val compare : t -> t -> int
  (** A total order on tensors; agrees with [Stdlib.compare]. *)

  val hash : t -> int
  (** A hash fixed at creation; equals [Hashtbl.hash]. *)
end

(** {1 Command buffers} *)

module Cmdbuf : sig
  type t
  (** A command buffer. Compared and hashed by identity (see {b Identity} above). *)

  val create : Device.t -> t
  (** An empty buffer of the device.
      @raise Error [Invalid_handle] (a freed device), [Out_of_memory]. *)

  val commit : t -> unit
  (** Submit the recorded ops and return at once; the sources of its {!copy_from_host}s
      are read before it returns. Committing again replays them on the tensors' (and
      sources') current contents. A committed buffer records nothing more until {!reset}
      (recording then raises [Error (Invalid_argument, _)]).
      @raise Error [Invalid_handle] (the buffer, or a tensor recorded in it, was freed),
      [Backend_error], [Out_of_memory]. *)

  val wait : t -> unit
  (** Block until every submission of the buffer has completed; then the Bigarrays of its
      {!copy_to_host}s hold their values.
      @raise Error the first failure among them (e.g. [Invalid_argument] for an
      out-of-range label, with a message naming the op: see {b Errors} above), which a
      second wait no longer reports; [Invalid_handle] (freed). *)

  val run : t -> unit
  (** [commit] then [wait]. *)

  val reset : t -> unit
  (** Wait, then drop the recorded ops (and the tensors and Bigarrays kept alive for them),
      also when the wait raises.
      @raise Error as {!wait}. *)

  val op_count : t -> int
  (** The number of ops recorded. @raise Error [Invalid_handle]. *)

  val device_time : t -> float
  (** Seconds the device spent on the latest completed commit, first op to last (CUDA:
      device events; CPU: the worker's clock). Read it after [wait].
      @raise Error [Invalid_argument] before a commit has completed and been waited for;
      [Invalid_handle]. *)

  val device : t -> Device.t
  (** The device the buffer records for. *)

  val free : t -> unit
  (** Release the buffer and forget what it kept alive; idempotent. Its committed work still
      runs to completion (a failure of it is no longer reported). Never waits, except for a
      buffer that recorded a {!copy_to_host}: its work must be over before the Bigarrays may
      go, so free waits for it first. *)

  val equal : t -> t -> bool
  (** The same buffer (identity; the same answer after recording, reset or {!free}). *)

  val compare : t -> t -> int
  (** A total order on buffers; agrees with [Stdlib.compare]. *)

  val hash : t -> int
  (** A hash fixed at creation; equals [Hashtbl.hash]. *)
end

(** {1 Operations}

    Each records into the command buffer given first; nothing runs until it is committed.
    Unless an op says otherwise an output must not share memory with an input; [add],
    [scale], [activation_forward] and [softmax] may run in place. Every op raises
    [Error] with [Invalid_handle] (a freed argument), [Invalid_argument] (a committed
    buffer, an out-of-range option, an aliasing output), [Shape_mismatch],
    [Device_mismatch], [Unsupported] or [Out_of_memory]. *)

(** The activations fused into an op ([neat_activation], in its order). *)
type activation =
  | Identity  (** no activation ([NEAT_ACT_NONE]) *)
  | Relu
  | Sigmoid
  | Tanh
  | Gelu  (** tanh form: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x³))) *)

(** The memory order of the images of convolution and pooling ([neat_layout], in its
    order): a field of {!Conv2d.t} and {!Pool2d.t}. The same arithmetic, the elements in
    another order; a bias stays [[|k|]]. *)
type layout =
  | NCHW  (** the default: x [[|n; c; h; w|]], filters [[|k; c/groups; kh; kw|]] *)
  | NHWC
      (** "channels last": x [[|n; h; w; c|]], filters [[|k; kh; kw; c/groups|]], outputs
          [[|n; p; q; k|]] (on CUDA, half convolutions run fastest on tensor cores in NHWC) *)

(** Convolution descriptors ([neat_conv2d_desc]). *)
module Conv2d : sig
  type t = {
    kernel_h : int;  (** must equal the filter's size *)
    kernel_w : int;
    stride_h : int;  (** >= 1 *)
    stride_w : int;
    pad_h : int;  (** >= 0, smaller than the dilated kernel extent *)
    pad_w : int;
    dilation_h : int;  (** >= 1 *)
    dilation_w : int;
    groups : int;  (** >= 1, divides C and K *)
    layout : layout;  (** of x, the filters, out and dy *)
  }

  val make :
    ?stride:int -> ?stride_h:int -> ?stride_w:int -> ?pad:int -> ?pad_h:int -> ?pad_w:int ->
    ?dilation:int -> ?dilation_h:int -> ?dilation_w:int -> ?groups:int -> ?layout:layout ->
    int -> int -> t
  (** [make kh kw] ([neat_conv2d_desc_full]): every field can be given. [stride] (default
      1), [pad] (0) and [dilation] (1) set both axes; [stride_h], [stride_w], [pad_h], ...
      override one axis; [groups] defaults to 1, [layout] to [NCHW]. Nothing is checked
      here: a bad value is reported by the op that uses the descriptor ([Invalid_argument]). *)
end

(** Pooling descriptors ([neat_pool2d_desc]). *)
module Pool2d : sig
  type t = {
    kernel_h : int;  (** >= 1 *)
    kernel_w : int;
    stride_h : int;  (** >= 1 *)
    stride_w : int;
    pad_h : int;  (** >= 0, at most half the kernel; padding is -infinity *)
    pad_w : int;
    layout : layout;  (** of x, out, dy and dx *)
  }

  val make :
    ?stride:int -> ?stride_h:int -> ?stride_w:int -> ?pad:int -> ?pad_h:int -> ?pad_w:int ->
    ?layout:layout -> int -> int -> t
  (** [make kh kw] ([neat_pool2d_desc_full]): every field can be given. The stride of an
      axis defaults to [stride], else to the kernel's size on that axis (non-overlapping
      windows); the padding to [pad], else 0; the layout to [NCHW]. Checked by the op that
      uses it. *)
end

val matmul :
  Cmdbuf.t -> ?alpha:float -> ?beta:float -> ?trans_a:bool -> ?trans_b:bool -> Tensor.t ->
  Tensor.t -> out:Tensor.t -> unit
(** [matmul cb a b ~out]: out = alpha·op(a)·op(b) + beta·out; op(a) M×K, op(b) K×N, out
    M×N. Defaults: alpha 1, beta 0 (out's contents are then not read), no transposes. *)

val matmul_batched :
  Cmdbuf.t -> ?alpha:float -> ?beta:float -> ?trans_a:bool -> ?trans_b:bool -> Tensor.t ->
  Tensor.t -> out:Tensor.t -> unit
(** {!matmul} on each of B matrices: a, b, out are 3-D with the same first size B. *)

val add : Cmdbuf.t -> Tensor.t -> Tensor.t -> out:Tensor.t -> unit
(** [add cb a b ~out]: out = a + b; b has a's shape, or is a row ([[|n|]] or [[|1; n|]]) of
    a's last size added to every row. out may be a. *)

val mul : Cmdbuf.t -> Tensor.t -> Tensor.t -> out:Tensor.t -> unit
(** [mul cb a b ~out]: out = a * b elementwise, with {!add}'s shapes and row broadcasting;
    out may be a. Raises as {!add}. *)

val cast : Cmdbuf.t -> Tensor.t -> out:Tensor.t -> unit
(** [cast cb x ~out]: out = x converted to out's element type (same shapes; rounded to
    nearest, ties to even). *)

val scale : Cmdbuf.t -> Tensor.t -> float -> out:Tensor.t -> unit
(** [scale cb x alpha ~out]: out = alpha·x; out may be x. *)

val fill : Cmdbuf.t -> out:Tensor.t -> float -> unit
(** [fill cb ~out v]: every element of out set to v. *)

val linear_forward :
  Cmdbuf.t -> ?act:activation -> ?bias:Tensor.t -> Tensor.t -> Tensor.t -> out:Tensor.t ->
  unit
(** [linear_forward cb ?act ?bias x w ~out]: out = act(x·wᵀ + bias) with x [[|n; inp|]], w
    [[|outs; inp|]], bias [[|outs|]], out [[|n; outs|]]; the activation (default
    [Identity]) is fused. *)

val conv2d_forward :
  Cmdbuf.t -> Conv2d.t -> ?act:activation -> ?bias:Tensor.t -> Tensor.t -> Tensor.t ->
  out:Tensor.t -> unit
(** [conv2d_forward cb desc ?act ?bias x w ~out]: out = act(conv2d(x, w) + bias); x
    [[|n; c; h; w|]], w [[|k; c/groups; kh; kw|]], bias [[|k|]], out [[|n; k; p; q|]] with
    p = (h + 2 pad_h - dilation_h (kh-1) - 1) / stride_h + 1. A cross-correlation. In
    [NHWC] layout: x [[|n; h; w; c|]], w [[|k; kh; kw; c/groups|]], out [[|n; p; q; k|]]. *)

val maxpool2d : Cmdbuf.t -> Pool2d.t -> Tensor.t -> out:Tensor.t -> unit
(** [maxpool2d cb desc x ~out]: the maximum of each window; out [[|n; c; p; q|]],
    p = (h + 2 pad_h - kh) / stride_h + 1 (in [NHWC] layout: x [[|n; h; w; c|]], out
    [[|n; p; q; c|]]). A NaN in a window gives NaN. *)

val sum_all : Cmdbuf.t -> Tensor.t -> out:Tensor.t -> unit
(** [sum_all cb x ~out]: out (one element) = the sum of x, deterministic. *)

val sum_axis : Cmdbuf.t -> Tensor.t -> int -> out:Tensor.t -> unit
(** [sum_axis cb x axis ~out]: sums along [axis]; out has x's shape with that size removed
    or 1. An axis outside [0 .. ndim - 1] (past a C [int] too) is [Invalid_argument]. *)

val softmax : Cmdbuf.t -> Tensor.t -> out:Tensor.t -> unit
(** [softmax cb x ~out]: softmax along the last dimension; out may be x. *)

(** {2 Training} *)

val activation_forward : Cmdbuf.t -> activation -> Tensor.t -> out:Tensor.t -> unit
(** [activation_forward cb act x ~out]: out = act(x) elementwise; out may be x. *)

val activation_backward :
  Cmdbuf.t -> activation -> ?x:Tensor.t -> ?y:Tensor.t -> Tensor.t -> dx:Tensor.t -> unit
(** [activation_backward cb act ?x ?y dy ~dx]: dx = dy·act'(x). [Relu], [Sigmoid] and
    [Tanh] read the forward output [y]; [Gelu] reads the input [x]; [Identity] copies dy.
    The one not read may be left out (and is ignored if given). *)

val linear_backward :
  Cmdbuf.t -> ?act:activation -> ?bias:Tensor.t -> ?y:Tensor.t -> ?dx:Tensor.t ->
  ?dw:Tensor.t -> ?db:Tensor.t -> ?accumulate:bool -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [linear_backward cb ?act ?bias ?y ?dx ?dw ?db ?accumulate x w dy]: the gradients of
    {!linear_forward} from dy [[|n; outs|]]. [y] is the forward's output (needed for
    [Relu], [Sigmoid], [Tanh]); [Gelu] recomputes the pre-activation from x, w and [bias].
    Each of dx, dw, db is computed only when given; [accumulate] (default false) adds to
    them instead of overwriting. *)

val conv2d_backward :
  Cmdbuf.t -> Conv2d.t -> ?act:activation -> ?bias:Tensor.t -> ?y:Tensor.t -> ?dx:Tensor.t ->
  ?dw:Tensor.t -> ?db:Tensor.t -> ?accumulate:bool -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [conv2d_backward cb desc ?act ?bias ?y ?dx ?dw ?db ?accumulate x w dy]: the gradients
    of {!conv2d_forward} from dy [[|n; k; p; q|]] ([[|n; p; q; k|]] in [NHWC] layout), with
    the rules of {!linear_backward}. *)

val maxpool2d_backward : Cmdbuf.t -> Pool2d.t -> Tensor.t -> Tensor.t -> dx:Tensor.t -> unit
(** [maxpool2d_backward cb desc x dy ~dx]: each dy element goes to the first maximum of its
    window in x; overlapping windows add up; dx is overwritten. x, dx and dy are laid out
    as the descriptor's [layout] says. *)

val softmax_backward : Cmdbuf.t -> Tensor.t -> Tensor.t -> dx:Tensor.t -> unit
(** [softmax_backward cb y dy ~dx]: dx = y·(dy - sum(dy·y)) along the last dimension; y is
    {!softmax}'s output. *)

val softmax_cross_entropy : Cmdbuf.t -> Tensor.t -> Tensor.t -> out:Tensor.t -> unit
(** [softmax_cross_entropy cb logits labels ~out]: out (one element) = mean over rows of
    -log softmax(logits)[label]; logits [[|n; c|]], labels [[|n|]] holding class indices as
    floats. An out-of-range label raises [Error (Invalid_argument, _)] at {!Cmdbuf.wait}. *)

val softmax_cross_entropy_backward :
  Cmdbuf.t -> Tensor.t -> Tensor.t -> dlogits:Tensor.t -> unit
(** [softmax_cross_entropy_backward cb logits labels ~dlogits]:
    dlogits = (softmax(logits) - onehot(labels)) / n. *)

val sgd_update :
  Cmdbuf.t -> ?momentum:float -> ?weight_decay:float -> ?nesterov:bool -> ?velocity:Tensor.t ->
  Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [sgd_update cb ?momentum ?weight_decay ?nesterov ?velocity hyper param grad]:
    g = grad + weight_decay·param; v = momentum·v + g; param -= lr·v (Nesterov:
    param -= lr·(g + momentum·v)), as PyTorch's SGD. [hyper] is a 2-element tensor
    [[|lr; step|]] read when the op runs, so a replayed step follows a schedule written
    with {!Tensor.write_array} between commits. [velocity] is required when momentum is not
    0; it must hold zeros before the first step: create it with {!Tensor.zeros}. The
    library never clears it, and a tensor from {!Tensor.create} may hold an old tensor's
    values. *)

val adam_update :
  Cmdbuf.t -> ?beta1:float -> ?beta2:float -> ?eps:float -> ?weight_decay:float -> Tensor.t ->
  Tensor.t -> Tensor.t -> m:Tensor.t -> v:Tensor.t -> unit
(** [adam_update cb ?beta1 ?beta2 ?eps ?weight_decay hyper param grad ~m ~v]: AdamW with
    bias correction at step hyper[1] (1, 2, ...); defaults 0.9, 0.999, 1e-8, 0.
    param ·= 1 - lr·wd; m = b1·m + (1-b1)·g; v = b2·v + (1-b2)·g²;
    param -= lr·(m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps). The moments [m] and [v] must hold
    zeros before step 1: create them with {!Tensor.zeros}; the library never clears them. *)

(** {2 Mixed precision}

    The usual recipe (docs/API.md, "Mixed precision"; ocaml/examples/fashion_mnist.ml's
    [--precision]): float32 master weights, a half copy of them ([Bf16] or [F16]) that the
    forward and backward passes read, half activations and gradients, the loss in float32
    on the logits cast to float32. [F16] also needs loss scaling ({!Loss_scale}): its
    gradients underflow otherwise. The CPU and CUDA run these ops; Metal raises
    [Unsupported] for now. *)

val sgd_update_mixed :
  Cmdbuf.t -> ?momentum:float -> ?weight_decay:float -> ?nesterov:bool -> ?velocity:Tensor.t ->
  ?scaler:Tensor.t -> ?param:Tensor.t -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [sgd_update_mixed cb ?momentum ?weight_decay ?nesterov ?velocity ?scaler ?param hyper
    master grad]: {!sgd_update} on the float32 master weights [master] from a gradient of
    any element type, in one pass: g = grad (widened to float32) / scale, the float32 step
    on [master] and [velocity] (float32), then, when [param] is given, param = master
    rounded to param's type (the weights the next forward pass reads). [scaler] is a loss
    scaler ({!Loss_scale}): scale = scaler[0], and the whole step is skipped (nothing is
    written) when scaler[1] <> 0, both read when the op runs; without it the scale is 1 and
    no step is skipped. [master], [grad], [velocity] and [param] have one shape; [master],
    [velocity], [hyper] and [scaler] are float32 ([Dtype_mismatch] names the one that is
    not); [scaler] has 3 elements ([Shape_mismatch]). The outputs alias no other tensor of
    the call. Without [scaler] and [param], with a float32 grad, this is {!sgd_update}. *)

val adam_update_mixed :
  Cmdbuf.t -> ?beta1:float -> ?beta2:float -> ?eps:float -> ?weight_decay:float ->
  ?scaler:Tensor.t -> ?param:Tensor.t -> Tensor.t -> Tensor.t -> Tensor.t -> m:Tensor.t ->
  v:Tensor.t -> unit
(** [adam_update_mixed cb ?beta1 ?beta2 ?eps ?weight_decay ?scaler ?param hyper master grad
    ~m ~v]: {!adam_update} on float32 master weights, with the gradient, [scaler] and
    [param] of {!sgd_update_mixed}; the moments [m] and [v] are float32. *)

(** Dynamic loss scaling: the loss gradient multiplied by a large scale keeps [F16]
    gradients above their underflow; the scale backs off when they overflow. A scaler is a
    float32 tensor of 3 elements, read and written only by recorded ops (so a replayed step
    never waits for the host): [[|scale; found_inf; good_steps|]], found_inf 0 or 1, good
    steps since the last change of the scale. One step: {!scale} on the loss gradient, the
    backward pass, {!check} over every gradient, the mixed optimizers with [~scaler],
    {!update}. None of these ops fails when it runs. *)
module Loss_scale : sig
  (** [neat_loss_scale_params]. *)
  type params = {
    growth_factor : float;  (** scale ·= growth after [growth_interval] good steps; >= 1 *)
    backoff_factor : float;  (** scale ·= backoff after a step with non-finite gradients;
                                 in (0, 1] *)
    growth_interval : int;  (** >= 1 *)
  }

  val default : params
  (** PyTorch's GradScaler's: growth 2.0, backoff 0.5, interval 2000. *)

  val create : ?scale:float -> Device.t -> Tensor.t
  (** [create ?scale dev]: a new scaler [[|scale; 0; 0|]], scale 65536 (2{^16}) by default.
      Raises as {!Tensor.of_array}. *)

  val scale : Cmdbuf.t -> Tensor.t -> Tensor.t -> out:Tensor.t -> unit
  (** [scale cb scaler x ~out]: out = x·scaler[0], the scale read when the op runs, the
      product rounded once to out's type. x and out of one shape and one type (any); out
      may be x, not scaler. @raise Error [Shape_mismatch] (x and out, a scaler not of 3
      elements), [Dtype_mismatch] (a scaler not float32, x and out of different types). *)

  val check : Cmdbuf.t -> Tensor.t list -> Tensor.t -> unit
  (** [check cb tensors scaler]: scaler[1] = 1 if any element of [tensors] is NaN or
      infinite, else 0 (an empty list: 0); one op over tensors of any types and shapes
      (they may share memory, not with scaler).
      @raise Error [Invalid_argument] for more than 4096 tensors
      ([NEAT_LOSS_SCALE_CHECK_MAX]) or scaler among them; [Shape_mismatch] and
      [Dtype_mismatch] for the scaler. *)

  val update : Cmdbuf.t -> ?params:params -> Tensor.t -> unit
  (** [update cb ?params scaler] (default {!default}), after the optimizers: if scaler[1]
      <> 0, scale ·= backoff and good steps = 0; else good steps += 1 and, when they reach
      growth_interval, scale ·= growth and good steps = 0. found_inf is left as it is (the
      next {!check} overwrites it). A scale that would overflow float32 stays as it is.
      @raise Error [Invalid_argument] for params out of range; as {!scale} for the scaler. *)
end

(** {2 Host copies}

    A training loop feeds its batch and reads its loss with these, recorded into the step's
    buffer, so that no call waits for the device but the step's own {!Cmdbuf.wait}. The
    buffer keeps the Bigarrays alive (their data never moves) until {!Cmdbuf.reset} or
    {!Cmdbuf.free}. Besides the errors of every op, they raise [Shape_mismatch] when the
    Bigarray has not the tensor's element count (the shapes may differ: the copy is flat). *)

val copy_from_host : Cmdbuf.t -> float32_array -> out:Tensor.t -> unit
(** [copy_from_host cb src ~out]: copy [src] into [out] when the op runs. [src] is read
    during {!Cmdbuf.commit}, at every commit again: once commit returns, the program may
    refill it (with the next batch) while the device runs. *)

val copy_to_host : Cmdbuf.t -> Tensor.t -> out:float32_array -> unit
(** [copy_to_host cb t ~out]: copy [t] into [out] when the op runs, so [out] holds the
    tensor's value at that point of the buffer once {!Cmdbuf.wait} returns, until a later
    commit of the buffer writes it again (with a later commit in flight it may be being
    written: read it before committing again). [out] is not written when an earlier op
    of the submission failed. Until then the device may write it at any time: read it after
    [wait] only. *)

(** {1 Collectives}

    Data-parallel training across devices and processes ([neat_comm], NCCL on CUDA, MPI on
    the CPU when the library was built with it; without MPI the CPU has single-rank comms
    only). A {!Comm.t} joins one device of each of [nranks] ranks: processes (one device
    each, {!Comm.create}, the {!Comm.Id.t} passed from rank 0 to the others as text) or
    devices of one process ({!Comm.create_all}). The collectives are recorded ops: they run
    in order with the rest of a buffer and replay with it. Every rank must record the same
    collectives in the same order with the same element counts; a rank whose peer
    disagrees, dies or does not answer within the comm's timeout gets [Error] from
    {!Cmdbuf.wait} ([Shape_mismatch], [Backend_error] or [Timeout], with a message), never a
    hang without end; after [Timeout] or a peer's death the comm is broken: free it. With
    several devices in one process, commit each device's buffers from a thread of its own:
    a collective's submission may wait for its peers. *)

module Comm : sig
  (** What every rank passes to {!create} ([neat_comm_id]): made once by rank 0 and copied to
      the others, through a file or an environment variable, as {!to_string}'s text. *)
  module Id : sig
    type t
    (** The id's 128 bytes: a value, so [=], [compare] and [Hashtbl.hash] compare the
        bytes (an id read back from its text equals the original). *)

    val create : Backend.t -> t
    (** A new id for comms of the backend's devices ([Auto]: the first built of CUDA,
        Metal, CPU; pass the backend of the devices, {!Device.info}'s). CUDA:
        [ncclGetUniqueId], which also names rank 0's address; CPU: random bytes. Call it on
        rank 0 only.
        @raise Error [Unsupported] (the backend was not built, or has no collectives here,
        with the reason), [Backend_error]. *)

    val to_string : t -> string
    (** The id as 256 lowercase hex digits. *)

    val of_string : string -> t
    (** Parse what {!to_string} wrote; surrounding whitespace (a file's newline) is allowed.
        @raise Error [Invalid_argument] for anything else (the message says ["not an id"]
        and where the text goes wrong). *)

    val of_string_opt : string -> t option
    (** {!of_string}, [None] for a text that is not an id. *)

    val equal : t -> t -> bool
    (** The same bytes. *)

    val compare : t -> t -> int
    (** A total order on ids; agrees with [Stdlib.compare]. *)

    val hash : t -> int
    (** Equals [Hashtbl.hash]. *)
  end

  type t
  (** A communicator: one rank on one device. Compared and hashed by identity (see
      {b Identity} above). It keeps its device alive. *)

  val create : Device.t -> Id.t -> nranks:int -> rank:int -> t
  (** [create dev id ~nranks ~rank] joins the comm [id] as rank [rank] (0 <= rank <
      nranks) on [dev]. Every rank calls it with the same id and [nranks]; it returns once
      all have joined (the runtime lock is released meanwhile), or raises [Timeout] after
      300 s. On the CPU with MPI, [nranks] must be the size of [MPI_COMM_WORLD]; a single
      rank ([~nranks:1 ~rank:0]) needs no peers and no MPI.
      @raise Error [Invalid_argument] ([nranks] < 1, [rank] out of range, either past a
      C [int], ranks that disagree on the id or [nranks] or share a rank), [Invalid_handle]
      (a freed device),
      [Unsupported] (the backend has no collectives, or the CPU was built without MPI and
      [nranks] > 1), [Timeout], [Backend_error], [Out_of_memory]. *)

  val create_all : Device.t array -> t array
  (** One comm per device of this process ([ncclCommInitAll]): rank [i] on [devices.(i)],
      [nranks] the array's length. The devices are distinct devices of one backend; on the
      CPU only one. The runtime lock is released while they join.
      @raise Error as {!create}; [Invalid_argument] for an empty array or a device given
      twice, [Device_mismatch] for devices of different backends, [Unsupported] for more
      than one CPU device. *)

  val set_timeout : t -> float -> unit
  (** How long a collective (and {!Cmdbuf.wait} on it) may wait for the peers before
      [Timeout]: seconds > 0, or 0 to wait forever. Default 300.
      @raise Error [Invalid_argument] (negative, NaN, or 1e12 and more), [Invalid_handle]. *)

  val rank : t -> int
  (** This rank, in [0 .. nranks - 1]. @raise Error [Invalid_handle]. *)

  val nranks : t -> int
  (** The number of ranks. @raise Error [Invalid_handle]. *)

  val device : t -> Device.t
  (** The device the comm lives on. *)

  val free : t -> unit
  (** Release now; idempotent. It first waits for the device's committed work (the runtime
      lock is released meanwhile), so no collective in flight loses its comm; buffers that
      recorded a collective on it then raise [Error (Invalid_handle, _)] at
      {!Cmdbuf.commit} (reset them to record again). The GC's finalizer never waits: it
      leaves the comm to the next call that may wait for its device (see {b Memory}
      above). {!Device.free} frees the device's comms first. *)

  val equal : t -> t -> bool
  (** The same comm (identity; the same answer after {!free}). *)

  val compare : t -> t -> int
  (** A total order on comms; agrees with [Stdlib.compare]. *)

  val hash : t -> int
  (** A hash fixed at creation; equals [Hashtbl.hash]. *)
end

(** The reductions of the all-reduces ([neat_reduce_op], in its order). *)
type reduce_op =
  | Sum
  | Avg  (** the sum divided by [nranks] *)

(** Each records into the buffer, which keeps the comm alive (as its tensors) until
    {!Cmdbuf.reset}. Besides the errors of every op (a freed comm is [Invalid_handle]),
    recording raises [Device_mismatch] for a comm of another device than the buffer's. At
    run time {!Cmdbuf.wait} raises [Shape_mismatch] (the ranks' element counts differ),
    [Timeout] or [Backend_error]. *)

val all_reduce : Cmdbuf.t -> Comm.t -> ?op:reduce_op -> Tensor.t -> out:Tensor.t -> unit
(** [all_reduce cb comm ?op x ~out]: out = the reduction over the ranks of x ([op]
    defaults to [Sum]). [out] has x's element count (the shapes may differ); it may be x
    (in place), otherwise it must not overlap it. With one rank, out = x. *)

val all_reduce_bucket : Cmdbuf.t -> Comm.t -> ?op:reduce_op -> Tensor.t list -> unit
(** [all_reduce_bucket cb comm ?op tensors]: each tensor, in place, = its reduction over
    the ranks, all of them in one transfer (packed into a scratch buffer unless they
    already lie back to back in one storage, views of a flat buffer in order). Any shapes,
    zero-size allowed, an empty list too; no two may share memory ([Invalid_argument]).
    The gradients of a training step in one call. *)

val broadcast : Cmdbuf.t -> Comm.t -> root:int -> Tensor.t -> out:Tensor.t -> unit
(** [broadcast cb comm ~root x ~out]: out = rank [root]'s x on every rank. x is read on the
    root only: the other ranks may pass [out] as x. [out] has x's element count; it may be
    x. @raise Error [Invalid_argument] also for [root] outside [0 .. nranks - 1]. *)
