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
      Gpu.linear_forward cb ~act:Gpu.Relu x w y;
      Gpu.Cmdbuf.run cb;
      Gpu.Tensor.to_array y (* [| 6.; 15. |] *)
    ]}

    {b Errors.} Every failing call raises {!Error} with the status and the library's
    message (which names the call, the argument and the shapes). Recording validates
    everything; {!Cmdbuf.commit} and {!Cmdbuf.wait} report only what can happen at run time.

    {b Memory.} Tensors, command buffers and devices are released by the GC; a tensor tells
    the GC how many device bytes it holds, so dropping tensors brings on collections as
    host memory would. [free] releases at once and is idempotent; a freed object used again
    raises [Error (Invalid_handle, _)]. A tensor or command buffer keeps its device alive,
    and a command buffer keeps alive every tensor recorded into it until {!Cmdbuf.reset}.

    {b Threads.} The runtime lock is released while a call waits for the device
    ({!Cmdbuf.wait}, {!Device.synchronize}, host copies, [free]), so other OCaml threads
    run meanwhile. A device and its objects should be used from one thread at a time.

    Note: [open Neatml.Gpu] brings constructors [Invalid_argument] and [Error] into scope,
    which shadow the standard exceptions of the same name: prefer qualified names. *)

(** {1 Errors} *)

(** The error codes of [neat_status], in the C order ([NEAT_ERR_INVALID_ARGUMENT] first). *)
type status =
  | Invalid_argument  (** a bad option value, an aliasing output, a committed buffer *)
  | Shape_mismatch  (** shapes that do not fit together; the message gives them *)
  | Dtype_mismatch  (** reserved: every tensor is float32 *)
  | Device_mismatch  (** tensors or command buffer of different devices *)
  | Unsupported  (** the device's backend lacks the op, or was not built *)
  | Out_of_memory
  | Invalid_handle  (** a freed tensor, command buffer or device *)
  | Backend_error  (** the vendor library or the driver failed *)
  | Internal

exception Error of status * string
(** [Error (status, message)]: what the failing call returned and [neat_last_error ()]. *)

val status_to_string : status -> string
(** The C name of the status, e.g. ["NEAT_ERR_SHAPE_MISMATCH"]. *)

val version : unit -> int * int * int
(** [(major, minor, patch)] of the C library linked. Loading the bindings fails if its
    major.minor differs from the header they were compiled against. *)

(** {1 Devices} *)

type backend =
  | Auto  (** the best available (CUDA, then Metal, then CPU) or [$NEATML_BACKEND] *)
  | Cpu
  | Cuda
  | Metal

val backend_of_string : string -> backend option
(** ["auto"], ["cpu"], ["cuda"], ["metal"] (any case). *)

val backend_to_string : backend -> string

type math_mode =
  | Strict  (** float32 products and sums: the default *)
  | Tf32  (** TensorFloat-32 products where the hardware has them *)

module Device : sig
  type t

  type info = {
    backend : backend;  (** never [Auto] *)
    index : int;
    name : string;  (** e.g. ["NVIDIA H100 80GB HBM3"] or the CPU model *)
    total_memory : int;  (** bytes the device has (host RAM for the CPU) *)
    num_threads : int;  (** CPU: worker threads; GPU: multiprocessors *)
    math_mode : math_mode;
  }

  type memory_stats = {
    in_use : int;  (** bytes held by live tensors and running command buffers *)
    reserved : int;  (** in use plus cached for reuse *)
    peak : int;  (** highest [in_use] since creation or {!reset_peak} *)
  }

  val create : ?backend:backend -> ?index:int -> unit -> t
  (** [create ?backend ?index ()] opens device [index] (default 0) of [backend] (default
      [Auto]). Raises [Error (Unsupported, _)] when that backend was not built or has no
      such device. *)

  val info : t -> info
  val memory_stats : t -> memory_stats
  val reset_peak : t -> unit

  val trim : t -> unit
  (** Give the device's cached, unused memory back to the system. *)

  val set_math_mode : t -> math_mode -> unit
  (** For work recorded from now on; buffers recorded earlier keep their mode. *)

  val synchronize : t -> unit
  (** Wait for every committed command buffer of the device; raises the first
      asynchronous failure not yet reported by {!Cmdbuf.wait}. *)

  val free : t -> unit
  (** Wait for the device's work and release it, with every tensor and command buffer of it
      still alive (they raise [Error (Invalid_handle, _)] afterwards). Idempotent. *)
end

(** {1 Tensors} *)

type float32_array = (float, Bigarray.float32_elt, Bigarray.c_layout) Bigarray.Genarray.t
(** Host data: a C-layout float32 Bigarray of any number of dimensions. *)

module Tensor : sig
  type t

  val create : Device.t -> int array -> t
  (** [create dev shape]: a tensor of 0 to 4 dimensions, contents undefined. *)

  val of_bigarray : Device.t -> float32_array -> t
  (** A tensor of the Bigarray's shape (0 to 4 dimensions) holding a copy of its data. *)

  val to_bigarray : t -> float32_array
  (** A copy of the tensor in a new Bigarray of its shape, once committed work is done. *)

  val of_array : Device.t -> int array -> float array -> t
  (** [of_array dev shape data]: [data] in row-major order, as many elements as [shape]
      holds (else [Error (Shape_mismatch, _)]). *)

  val to_array : t -> float array
  (** The elements in row-major order. *)

  val write : t -> float32_array -> unit
  (** Copy host data into the tensor after the device's committed work has completed. The
      element counts must be equal (the shapes may differ: the copy is flat). *)

  val write_array : t -> float array -> unit
  (** {!write} from a float array. *)

  val read : t -> float32_array -> unit
  (** Copy the tensor into host data, same rules as {!write}. *)

  val shape : t -> int array
  val numel : t -> int

  val view : t -> int array -> t
  (** A tensor on the same memory with another shape of the same element count (the
      [[|n; 64; 7; 7|]] output of a convolution seen as [[|n; 3136|]]). The memory lives
      until the last tensor on it is released. *)

  val device : t -> Device.t

  val free : t -> unit
  (** Release now (waits for the device's committed work); idempotent. *)
end

(** {1 Command buffers} *)

module Cmdbuf : sig
  type t

  val create : Device.t -> t

  val commit : t -> unit
  (** Submit the recorded ops and return at once. Committing again replays them on the
      tensors' current contents. A committed buffer records nothing more until {!reset}
      (recording then raises [Error (Invalid_argument, _)]). *)

  val wait : t -> unit
  (** Block until every submission of the buffer has completed; raises the first failure
      among them (e.g. [Error (Invalid_argument, _)] for an out-of-range label). *)

  val run : t -> unit
  (** [commit] then [wait]. *)

  val reset : t -> unit
  (** Wait, then drop the recorded ops (and the tensors kept alive for them). *)

  val op_count : t -> int

  val device_time : t -> float
  (** Seconds the device spent on the latest completed commit, first op to last (CUDA:
      device events; CPU: the worker's clock). Read it after [wait].
      @raise Error [Invalid_argument] before a commit has completed and been waited for. *)

  val device : t -> Device.t

  val free : t -> unit
  (** Wait for the buffer's work and release it; idempotent. *)
end

(** {1 Operations}

    Each records into the command buffer given first; nothing runs until it is committed.
    Unless an op says otherwise an output must not share memory with an input; [add],
    [scale], [activation_forward] and [softmax] may run in place. Every op raises
    [Error] with [Invalid_handle] (a freed argument), [Invalid_argument] (a committed
    buffer, an out-of-range option, an aliasing output), [Shape_mismatch],
    [Device_mismatch] or [Unsupported]. *)

type activation =
  | Identity  (** no activation ([NEAT_ACT_NONE]) *)
  | Relu
  | Sigmoid
  | Tanh
  | Gelu  (** tanh form: 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x³))) *)

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
  }

  val make : ?stride:int -> ?pad:int -> ?dilation:int -> ?groups:int -> int -> int -> t
  (** [make kh kw] with the same stride (default 1), padding (0) and dilation (1) on both
      axes, and [groups] (1). *)
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
  }

  val make : ?stride:int -> ?pad:int -> int -> int -> t
  (** [make kh kw]: stride defaults to the kernel (non-overlapping windows), pad to 0. *)
end

val matmul :
  Cmdbuf.t -> ?alpha:float -> ?beta:float -> ?trans_a:bool -> ?trans_b:bool -> Tensor.t ->
  Tensor.t -> Tensor.t -> unit
(** [matmul cb a b c]: c = alpha·op(a)·op(b) + beta·c; op(a) M×K, op(b) K×N, c M×N.
    Defaults: alpha 1, beta 0 (c's contents are then not read), no transposes. *)

val matmul_batched :
  Cmdbuf.t -> ?alpha:float -> ?beta:float -> ?trans_a:bool -> ?trans_b:bool -> Tensor.t ->
  Tensor.t -> Tensor.t -> unit
(** {!matmul} on each of B matrices: a, b, c are 3-D with the same first size B. *)

val add : Cmdbuf.t -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [add cb a b out]: out = a + b; b has a's shape, or is a row ([[|n|]] or [[|1; n|]]) of
    a's last size added to every row. *)

val scale : Cmdbuf.t -> Tensor.t -> float -> Tensor.t -> unit
(** [scale cb x alpha out]: out = alpha·x. *)

val fill : Cmdbuf.t -> Tensor.t -> float -> unit
(** [fill cb t v]: every element of t set to v. *)

val linear_forward :
  Cmdbuf.t -> ?act:activation -> ?bias:Tensor.t -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [linear_forward cb ?act ?bias x w y]: y = act(x·wᵀ + bias) with x [[|n; inp|]], w
    [[|out; inp|]], bias [[|out|]], y [[|n; out|]]; the activation is fused. *)

val conv2d_forward :
  Cmdbuf.t -> Conv2d.t -> ?act:activation -> ?bias:Tensor.t -> Tensor.t -> Tensor.t ->
  Tensor.t -> unit
(** [conv2d_forward cb desc ?act ?bias x w y]: y = act(conv2d(x, w) + bias); x
    [[|n; c; h; w|]], w [[|k; c/groups; kh; kw|]], bias [[|k|]], y [[|n; k; p; q|]] with
    p = (h + 2 pad_h - dilation_h (kh-1) - 1) / stride_h + 1. A cross-correlation. *)

val maxpool2d : Cmdbuf.t -> Pool2d.t -> Tensor.t -> Tensor.t -> unit
(** [maxpool2d cb desc x y]: the maximum of each window; y [[|n; c; p; q|]],
    p = (h + 2 pad_h - kh) / stride_h + 1. *)

val sum_all : Cmdbuf.t -> Tensor.t -> Tensor.t -> unit
(** [sum_all cb x y]: y (one element) = the sum of x, deterministic. *)

val sum_axis : Cmdbuf.t -> Tensor.t -> int -> Tensor.t -> unit
(** [sum_axis cb x axis y]: sums along [axis]; y has x's shape with that size removed or 1. *)

val softmax : Cmdbuf.t -> Tensor.t -> Tensor.t -> unit
(** [softmax cb x y]: softmax along the last dimension; y may be x. *)

(** {2 Training} *)

val activation_forward : Cmdbuf.t -> activation -> Tensor.t -> Tensor.t -> unit
(** [activation_forward cb act x y]: y = act(x) elementwise; y may be x. *)

val activation_backward :
  Cmdbuf.t -> activation -> ?x:Tensor.t -> ?y:Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [activation_backward cb act ?x ?y dy dx]: dx = dy·act'(x). [Relu], [Sigmoid] and
    [Tanh] read the forward output [y]; [Gelu] reads the input [x]. *)

val linear_backward :
  Cmdbuf.t -> ?act:activation -> ?bias:Tensor.t -> ?y:Tensor.t -> ?dx:Tensor.t ->
  ?dw:Tensor.t -> ?db:Tensor.t -> ?accumulate:bool -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [linear_backward cb ?act ?bias ?y ?dx ?dw ?db ?accumulate x w dy]: the gradients of
    {!linear_forward} from dy [[|n; out|]]. [y] is the forward's output (needed for [Relu],
    [Sigmoid], [Tanh]); [Gelu] recomputes the pre-activation from x, w and [bias]. Each of
    dx, dw, db is computed only when given; [accumulate] (default false) adds to them. *)

val conv2d_backward :
  Cmdbuf.t -> Conv2d.t -> ?act:activation -> ?bias:Tensor.t -> ?y:Tensor.t -> ?dx:Tensor.t ->
  ?dw:Tensor.t -> ?db:Tensor.t -> ?accumulate:bool -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [conv2d_backward cb desc ?act ?bias ?y ?dx ?dw ?db ?accumulate x w dy]: the gradients
    of {!conv2d_forward}, with the rules of {!linear_backward}. *)

val maxpool2d_backward : Cmdbuf.t -> Pool2d.t -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [maxpool2d_backward cb desc x dy dx]: each dy element goes to the first maximum of its
    window in x; overlapping windows add up; dx is overwritten. *)

val softmax_backward : Cmdbuf.t -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [softmax_backward cb y dy dx]: dx = y·(dy - sum(dy·y)) along the last dimension. *)

val softmax_cross_entropy : Cmdbuf.t -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [softmax_cross_entropy cb logits labels loss]: loss (one element) = mean over rows of
    -log softmax(logits)[label]; logits [[|n; c|]], labels [[|n|]] holding class indices as
    floats. An out-of-range label raises at {!Cmdbuf.wait}. *)

val softmax_cross_entropy_backward : Cmdbuf.t -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [softmax_cross_entropy_backward cb logits labels dlogits]:
    dlogits = (softmax(logits) - onehot(labels)) / n. *)

val sgd_update :
  Cmdbuf.t -> ?momentum:float -> ?weight_decay:float -> ?nesterov:bool -> ?velocity:Tensor.t ->
  hyper:Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [sgd_update cb ?momentum ?weight_decay ?nesterov ?velocity ~hyper param grad]:
    g = grad + weight_decay·param; v = momentum·v + g; param -= lr·v (Nesterov:
    param -= lr·(g + momentum·v)), as PyTorch's SGD. [hyper] is a 2-element tensor
    [[|lr; step|]] read when the op runs, so a replayed step follows a schedule written
    with {!Tensor.write_array} between commits. [velocity] (zeros at first) is required
    when momentum is not 0. *)

val adam_update :
  Cmdbuf.t -> ?beta1:float -> ?beta2:float -> ?eps:float -> ?weight_decay:float ->
  hyper:Tensor.t -> Tensor.t -> Tensor.t -> Tensor.t -> Tensor.t -> unit
(** [adam_update cb ?beta1 ?beta2 ?eps ?weight_decay ~hyper param grad m v]: AdamW with
    bias correction at step hyper[1] (1, 2, ...); defaults 0.9, 0.999, 1e-8, 0.
    param ·= 1 - lr·wd; m = b1·m + (1-b1)·g; v = b2·v + (1-b2)·g²;
    param -= lr·(m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps). *)
