(* gpu.ml — Neatml.Gpu: the OCaml face of include/neatml.h. The stubs (neatml_objects.c,
   neatml_ops.c) do the C calls; this file adds the records that keep devices alive for as
   long as their tensors and command buffers, the optional arguments of the C defaults and
   the labels of the outputs. *)

module Status = struct
  (* The constructor order is the C codes' (-1 first): the stubs convert by position. *)
  type t =
    | Invalid_argument
    | Shape_mismatch
    | Dtype_mismatch
    | Device_mismatch
    | Unsupported
    | Out_of_memory
    | Invalid_handle
    | Backend_error
    | Internal
    | Timeout

  external to_string : t -> string = "neatml_status_string"
end

exception Error of Status.t * string

(* The stubs raise this exception by name. *)
let () = Callback.register_exception "neatml.error" (Error (Status.Internal, ""))

let () =
  Printexc.register_printer (function
    | Error (s, msg) -> Some (Printf.sprintf "Neatml.Gpu.Error(%s, %S)" (Status.to_string s) msg)
    | _ -> None)

external version_number : unit -> int = "neatml_version_number"
external header_version_number : unit -> int = "neatml_header_version_number"

let version () =
  let v = version_number () in
  (v / 10000, v / 100 mod 100, v mod 100)

external collect : unit -> unit = "neatml_collect"

module Backend = struct
  (* The constructor order is neat_backend's values (the stubs pass Int_val through); the
     names are the library's. *)
  type t = Auto | Cpu | Cuda | Metal

  external to_string : t -> string = "neatml_backend_name"
  external of_string : string -> t = "neatml_backend_from_name"
  external is_built : t -> bool = "neatml_backend_is_built"
  external count : unit -> int = "neatml_backend_count"

  let of_string_opt s =
    match of_string s with b -> Some b | exception Error (Status.Invalid_argument, _) -> None
end

(* The constructor orders below match the C enums' values. *)
type math_mode = Strict | Tf32
type activation = Identity | Relu | Sigmoid | Tanh | Gelu
type reduce_op = Sum | Avg

module Device = struct
  type t

  type info = {
    backend : Backend.t;
    index : int;
    name : string;
    total_memory : int;
    num_threads : int;
    math_mode : math_mode;
    selection : string;
  }

  type memory_stats = { in_use : int; reserved : int; peak : int; limit : int }

  external c_create : Backend.t -> int -> int -> t = "neatml_device_create"
  external free : t -> unit = "neatml_device_destroy"
  external gc_budget : t -> int = "neatml_device_gc_budget"

  external c_info : t -> Backend.t * int * string * int * int * math_mode * string
    = "neatml_device_info"

  external set_math_mode : t -> math_mode -> unit = "neatml_device_set_math_mode"
  external synchronize : t -> unit = "neatml_device_synchronize"
  external c_memory_stats : t -> int * int * int * int = "neatml_device_memory_stats"
  external c_set_memory_limit : t -> int -> unit = "neatml_device_set_memory_limit"
  external reset_peak : t -> unit = "neatml_device_reset_peak"
  external trim : t -> unit = "neatml_device_trim"
  external drain : t -> unit = "neatml_device_drain"

  let create ?(backend = Backend.Auto) ?(index = 0) ?gc_budget () =
    match gc_budget with
    | Some b when b <= 0 ->
        raise
          (Error
             ( Status.Invalid_argument,
               Printf.sprintf "Neatml.Gpu.Device.create: gc_budget is %d, not positive" b ))
    | _ -> c_create backend index (Option.value gc_budget ~default:0)

  let info d =
    let backend, index, name, total_memory, num_threads, math_mode, selection = c_info d in
    { backend; index; name; total_memory; num_threads; math_mode; selection }

  let memory_stats d =
    let in_use, reserved, peak, limit = c_memory_stats d in
    { in_use; reserved; peak; limit }

  let set_memory_limit d bytes = c_set_memory_limit d bytes

  (* The custom block compares and hashes its id, fixed at creation. *)
  let compare (a : t) b = Stdlib.compare a b
  let equal a b = compare a b = 0
  let hash (d : t) = Hashtbl.hash d
end

type float32_array = (float, Bigarray.float32_elt, Bigarray.c_layout) Bigarray.Genarray.t

module Dtype = struct
  (* The constructors' order is neat_dtype's values (the stubs pass the index). *)
  type t = F32 | Bf16 | F16

  let to_string = function F32 -> "f32" | Bf16 -> "bf16" | F16 -> "f16"
  let size = function F32 -> 4 | Bf16 | F16 -> 2
end

module Tensor = struct
  type handle

  (* [device] is never read: it is here so that the device outlives the tensor. Nothing here
     is mutable, and the handle block compares and hashes its fixed id: compare and hash of
     the record never change. *)
  type t = { h : handle; device : Device.t }

  external c_create_typed : Device.t -> Dtype.t -> int array -> bool -> handle
    = "neatml_tensor_create_typed"

  external c_dtype : handle -> Dtype.t = "neatml_tensor_dtype"
  external c_view : handle -> int array -> handle = "neatml_tensor_view"
  external c_free : handle -> unit = "neatml_tensor_destroy"
  external c_shape : handle -> int array = "neatml_tensor_shape"
  external c_write : handle -> float32_array -> unit = "neatml_tensor_write"
  external c_read : handle -> float32_array -> unit = "neatml_tensor_read"
  external c_write_raw : handle -> (_, _, Bigarray.c_layout) Bigarray.Genarray.t -> unit
    = "neatml_tensor_write_raw"

  external c_read_raw : handle -> (_, _, Bigarray.c_layout) Bigarray.Genarray.t -> unit
    = "neatml_tensor_read_raw"

  (* Out of device memory: the garbage tensors may be what fills it. A full major collection
     destroys them (their memory returns once the work that uses them completes). A tensor
     recorded into a dropped command buffer is still held by the buffer's root after that
     collection, which only finalized the buffer: the drain of this device removes the root
     (waiting for this device's buffers that write host memory), and a second collection
     destroys what it held. *)
  let with_gc_retry create device shape =
    let h =
      match create device shape with
      | h -> h
      | exception Error (Status.Out_of_memory, _) ->
          Gc.full_major ();
          Device.drain device;
          Gc.full_major ();
          create device shape
    in
    { h; device }

  let create ?(dtype = Dtype.F32) device shape =
    with_gc_retry (fun d s -> c_create_typed d dtype s false) device shape

  let zeros ?(dtype = Dtype.F32) device shape =
    with_gc_retry (fun d s -> c_create_typed d dtype s true) device shape

  let dtype t = c_dtype t.h
  let write_raw t a = c_write_raw t.h a
  let read_raw t a = c_read_raw t.h a
  let device t = t.device
  let view t shape = { h = c_view t.h shape; device = t.device }
  let free t = c_free t.h
  let shape t = c_shape t.h
  let numel t = Array.fold_left ( * ) 1 (shape t)
  let write t a = c_write t.h a
  let read t a = c_read t.h a
  let compare (a : t) b = Stdlib.compare a b
  let equal a b = compare a b = 0
  let hash (t : t) = Hashtbl.hash t

  let of_bigarray device a =
    let t = create device (Bigarray.Genarray.dims a) in
    (match write t a with
    | () -> ()
    | exception e ->
        free t;
        raise e);
    t

  let to_bigarray t =
    let a = Bigarray.Genarray.create Bigarray.float32 Bigarray.c_layout (shape t) in
    read t a;
    a

  let flat_of_array a =
    Bigarray.genarray_of_array1 (Bigarray.Array1.of_array Bigarray.float32 Bigarray.c_layout a)

  let of_array device shape a =
    let t = create device shape in
    (match write t (flat_of_array a) with
    | () -> ()
    | exception e ->
        free t;
        raise e);
    t

  let to_array t =
    let a = Bigarray.Array1.create Bigarray.float32 Bigarray.c_layout (numel t) in
    read t (Bigarray.genarray_of_array1 a);
    Array.init (Bigarray.Array1.dim a) (Bigarray.Array1.get a)

  let write_array t a = write t (flat_of_array a)
end

module Comm = struct
  type handle

  module Id = struct
    (* The 128 bytes of neat_comm_id; the stubs make every value, so each has that length. *)
    type t = string

    external create : Backend.t -> t = "neatml_comm_id_create"
    external to_string : t -> string = "neatml_comm_id_to_string"
    external of_string : string -> t = "neatml_comm_id_of_string"

    let of_string_opt s =
      match of_string s with id -> Some id | exception Error (Status.Invalid_argument, _) -> None

    let equal = String.equal
    let compare = String.compare
    let hash (id : t) = Hashtbl.hash id
  end

  (* As Tensor.t: [device] keeps the device alive for as long as the comm. *)
  type t = { h : handle; device : Device.t }

  external c_create : Device.t -> Id.t -> int -> int -> handle = "neatml_comm_create"
  external c_create_all : Device.t array -> handle array = "neatml_comm_create_all"
  external c_free : handle -> unit = "neatml_comm_destroy"
  external c_set_timeout : handle -> float -> unit = "neatml_comm_set_timeout"
  external c_info : handle -> int * int = "neatml_comm_info"

  let create device id ~nranks ~rank = { h = c_create device id nranks rank; device }

  let create_all devices =
    Array.mapi (fun i h -> { h; device = devices.(i) }) (c_create_all devices)

  let device c = c.device
  let free c = c_free c.h
  let set_timeout c seconds = c_set_timeout c.h seconds
  let rank c = fst (c_info c.h)
  let nranks c = snd (c_info c.h)
  let compare (a : t) b = Stdlib.compare a b
  let equal a b = compare a b = 0
  let hash (c : t) = Hashtbl.hash c
end

module Cmdbuf = struct
  type handle

  (* What was recorded since the last reset is kept alive by the handle block (a global
     root of the stubs), not by a mutable field here: a tensor or Bigarray the program
     dropped after recording stays alive until the buffer forgets it, so a replay never
     finds a handle the GC destroyed nor host memory it freed, and the record's compare and
     hash never change. *)
  type t = { h : handle; device : Device.t }
  type kept = Tensor of Tensor.handle | Host of float32_array | Comm of Comm.handle

  external c_create : Device.t -> handle = "neatml_cmdbuf_create"
  external c_free : handle -> unit = "neatml_cmdbuf_destroy"
  external c_commit : handle -> unit = "neatml_cmdbuf_commit"
  external c_wait : handle -> unit = "neatml_cmdbuf_wait"
  external c_reset : handle -> unit = "neatml_cmdbuf_reset"
  external c_op_count : handle -> int = "neatml_cmdbuf_op_count"
  external c_device_time : handle -> float = "neatml_cmdbuf_device_time"
  external c_recorded : handle -> kept list = "neatml_cmdbuf_recorded"
  external c_set_recorded : handle -> kept list -> unit = "neatml_cmdbuf_set_recorded"

  let create device = { h = c_create device; device }
  let device cb = cb.device
  let commit cb = c_commit cb.h
  let wait cb = c_wait cb.h

  let reset cb = c_reset cb.h (* the stub forgets what was kept *)

  let free cb = c_free cb.h
  let op_count cb = c_op_count cb.h
  let device_time cb = c_device_time cb.h
  let compare (a : t) b = Stdlib.compare a b
  let equal a b = compare a b = 0
  let hash (cb : t) = Hashtbl.hash cb

  let run cb =
    commit cb;
    wait cb

  (* [recording cb items f] keeps [items] alive from the buffer's root, then runs [f], the
     C call that records. Kept first: an asynchronous exception (Sys.Break from a signal
     handler, a Gc.Memprof callback, Out_of_memory) raised at an allocation made after the
     C call had recorded would leave an op whose tensors, comm or Bigarray nothing keeps,
     and a replay would write into host memory the GC freed. The list is built before the
     root changes; a recording that fails puts back the list it found (no allocation
     between the C calls). *)
  let recording cb items f =
    let before = c_recorded cb.h in
    c_set_recorded cb.h (List.rev_append items before);
    match f cb.h with
    | () -> ()
    | exception e ->
        c_set_recorded cb.h before;
        raise e
end

type layout = NCHW | NHWC (* neat_layout's order: the stubs pass the constructor's index *)

module Conv2d = struct
  (* The field order is neat_conv2d_desc's: the stubs read and build the record by position. *)
  type t = {
    kernel_h : int;
    kernel_w : int;
    stride_h : int;
    stride_w : int;
    pad_h : int;
    pad_w : int;
    dilation_h : int;
    dilation_w : int;
    groups : int;
    layout : layout;
  }

  external full : int -> int -> int -> int -> int -> int -> int -> int -> int -> layout -> t
    = "neatml_conv2d_desc_full_bc" "neatml_conv2d_desc_full"

  let make ?(stride = 1) ?stride_h ?stride_w ?(pad = 0) ?pad_h ?pad_w ?(dilation = 1)
      ?dilation_h ?dilation_w ?(groups = 1) ?(layout = NCHW) kernel_h kernel_w =
    let ( |? ) o d = Option.value o ~default:d in
    full kernel_h kernel_w (stride_h |? stride) (stride_w |? stride) (pad_h |? pad)
      (pad_w |? pad) (dilation_h |? dilation) (dilation_w |? dilation) groups layout
end

module Pool2d = struct
  (* The field order is neat_pool2d_desc's. *)
  type t = {
    kernel_h : int;
    kernel_w : int;
    stride_h : int;
    stride_w : int;
    pad_h : int;
    pad_w : int;
    layout : layout;
  }

  external full : int -> int -> int -> int -> int -> int -> layout -> t
    = "neatml_pool2d_desc_full_bc" "neatml_pool2d_desc_full"

  let make ?stride ?stride_h ?stride_w ?(pad = 0) ?pad_h ?pad_w ?(layout = NCHW) kernel_h kernel_w =
    let ( |? ) o d = Option.value o ~default:d in
    let stride_h = stride_h |? (stride |? kernel_h) and stride_w = stride_w |? (stride |? kernel_w) in
    full kernel_h kernel_w stride_h stride_w (pad_h |? pad) (pad_w |? pad) layout
end

(* ---- operations: [record cb ts f] keeps the tensors it names, then runs the stub ---- *)

let h (t : Tensor.t) = t.h
let oh = Option.map h
let opt = function Some t -> [ t ] | None -> []
let kept ts = List.map (fun (t : Tensor.t) -> Cmdbuf.Tensor t.h) ts
let record cb ts f = Cmdbuf.recording cb (kept ts) f

external c_copy_from_host : Cmdbuf.handle -> float32_array -> Tensor.handle -> unit
  = "neatml_copy_from_host"

external c_copy_to_host : Cmdbuf.handle -> Tensor.handle -> float32_array -> unit
  = "neatml_copy_to_host"

let copy_from_host cb src ~out =
  Cmdbuf.recording cb [ Tensor (h out); Host src ] (fun cb -> c_copy_from_host cb src (h out))

let copy_to_host cb t ~out =
  Cmdbuf.recording cb [ Tensor (h t); Host out ] (fun cb -> c_copy_to_host cb (h t) out)

external c_matmul :
  Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle -> float -> float -> bool ->
  bool -> unit = "neatml_matmul_bc" "neatml_matmul"

external c_matmul_batched :
  Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle -> float -> float -> bool ->
  bool -> unit = "neatml_matmul_batched_bc" "neatml_matmul_batched"

external c_add : Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_add"

external c_mul : Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_mul"

external c_cast : Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> unit = "neatml_cast"

external c_scale : Cmdbuf.handle -> Tensor.handle -> float -> Tensor.handle -> unit
  = "neatml_scale"

external c_fill : Cmdbuf.handle -> Tensor.handle -> float -> unit = "neatml_fill"

external c_linear_forward :
  Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle option -> activation ->
  Tensor.handle -> unit = "neatml_linear_forward_bc" "neatml_linear_forward"

external c_conv2d_forward :
  Cmdbuf.handle -> Conv2d.t -> Tensor.handle -> Tensor.handle -> Tensor.handle option ->
  activation -> Tensor.handle -> unit = "neatml_conv2d_forward_bc" "neatml_conv2d_forward"

external c_maxpool2d : Cmdbuf.handle -> Pool2d.t -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_maxpool2d"

external c_sum_all : Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> unit = "neatml_sum_all"

external c_sum_axis : Cmdbuf.handle -> Tensor.handle -> int -> Tensor.handle -> unit
  = "neatml_sum_axis"

external c_softmax : Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> unit = "neatml_softmax"

external c_activation_forward :
  Cmdbuf.handle -> activation -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_activation_forward"

external c_activation_backward :
  Cmdbuf.handle -> activation -> Tensor.handle option -> Tensor.handle option -> Tensor.handle ->
  Tensor.handle -> unit = "neatml_activation_backward_bc" "neatml_activation_backward"

external c_linear_backward :
  Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle option ->
  Tensor.handle option -> Tensor.handle -> activation -> Tensor.handle option ->
  Tensor.handle option -> Tensor.handle option -> bool -> unit
  = "neatml_linear_backward_bc" "neatml_linear_backward"

external c_conv2d_backward :
  Cmdbuf.handle -> Conv2d.t -> Tensor.handle -> Tensor.handle -> Tensor.handle option ->
  Tensor.handle option -> Tensor.handle -> activation -> Tensor.handle option ->
  Tensor.handle option -> Tensor.handle option -> bool -> unit
  = "neatml_conv2d_backward_bc" "neatml_conv2d_backward"

external c_maxpool2d_backward :
  Cmdbuf.handle -> Pool2d.t -> Tensor.handle -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_maxpool2d_backward"

external c_softmax_backward :
  Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_softmax_backward"

external c_softmax_cross_entropy :
  Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_softmax_cross_entropy"

external c_softmax_cross_entropy_backward :
  Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_softmax_cross_entropy_backward"

external c_sgd_update :
  Cmdbuf.handle -> float -> float -> bool -> Tensor.handle -> Tensor.handle -> Tensor.handle ->
  Tensor.handle option -> unit = "neatml_sgd_update_bc" "neatml_sgd_update"

external c_adam_update :
  Cmdbuf.handle -> float -> float -> float -> float -> Tensor.handle -> Tensor.handle ->
  Tensor.handle -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_adam_update_bc" "neatml_adam_update"

let matmul cb ?(alpha = 1.0) ?(beta = 0.0) ?(trans_a = false) ?(trans_b = false) a b ~out =
  record cb [ a; b; out ] (fun cb -> c_matmul cb (h a) (h b) (h out) alpha beta trans_a trans_b)

let matmul_batched cb ?(alpha = 1.0) ?(beta = 0.0) ?(trans_a = false) ?(trans_b = false) a b
    ~out =
  record cb [ a; b; out ] (fun cb ->
      c_matmul_batched cb (h a) (h b) (h out) alpha beta trans_a trans_b)

let add cb a b ~out = record cb [ a; b; out ] (fun cb -> c_add cb (h a) (h b) (h out))
let mul cb a b ~out = record cb [ a; b; out ] (fun cb -> c_mul cb (h a) (h b) (h out))
let cast cb x ~out = record cb [ x; out ] (fun cb -> c_cast cb (h x) (h out))
let scale cb x alpha ~out = record cb [ x; out ] (fun cb -> c_scale cb (h x) alpha (h out))
let fill cb ~out value = record cb [ out ] (fun cb -> c_fill cb (h out) value)

let linear_forward cb ?(act = Identity) ?bias x w ~out =
  record cb ([ x; w; out ] @ opt bias) (fun cb ->
      c_linear_forward cb (h x) (h w) (oh bias) act (h out))

let conv2d_forward cb desc ?(act = Identity) ?bias x w ~out =
  record cb ([ x; w; out ] @ opt bias) (fun cb ->
      c_conv2d_forward cb desc (h x) (h w) (oh bias) act (h out))

let maxpool2d cb desc x ~out = record cb [ x; out ] (fun cb -> c_maxpool2d cb desc (h x) (h out))
let sum_all cb x ~out = record cb [ x; out ] (fun cb -> c_sum_all cb (h x) (h out))
let sum_axis cb x axis ~out = record cb [ x; out ] (fun cb -> c_sum_axis cb (h x) axis (h out))
let softmax cb x ~out = record cb [ x; out ] (fun cb -> c_softmax cb (h x) (h out))

let activation_forward cb act x ~out =
  record cb [ x; out ] (fun cb -> c_activation_forward cb act (h x) (h out))

let activation_backward cb act ?x ?y dy ~dx =
  record cb ([ dy; dx ] @ opt x @ opt y) (fun cb ->
      c_activation_backward cb act (oh x) (oh y) (h dy) (h dx))

let linear_backward cb ?(act = Identity) ?bias ?y ?dx ?dw ?db ?(accumulate = false) x w dy =
  record cb
    ([ x; w; dy ] @ opt bias @ opt y @ opt dx @ opt dw @ opt db)
    (fun cb ->
      c_linear_backward cb (h x) (h w) (oh bias) (oh y) (h dy) act (oh dx) (oh dw) (oh db)
        accumulate)

let conv2d_backward cb desc ?(act = Identity) ?bias ?y ?dx ?dw ?db ?(accumulate = false) x w dy
    =
  record cb
    ([ x; w; dy ] @ opt bias @ opt y @ opt dx @ opt dw @ opt db)
    (fun cb ->
      c_conv2d_backward cb desc (h x) (h w) (oh bias) (oh y) (h dy) act (oh dx) (oh dw) (oh db)
        accumulate)

let maxpool2d_backward cb desc x dy ~dx =
  record cb [ x; dy; dx ] (fun cb -> c_maxpool2d_backward cb desc (h x) (h dy) (h dx))

let softmax_backward cb y dy ~dx =
  record cb [ y; dy; dx ] (fun cb -> c_softmax_backward cb (h y) (h dy) (h dx))

let softmax_cross_entropy cb logits labels ~out =
  record cb [ logits; labels; out ] (fun cb ->
      c_softmax_cross_entropy cb (h logits) (h labels) (h out))

let softmax_cross_entropy_backward cb logits labels ~dlogits =
  record cb [ logits; labels; dlogits ] (fun cb ->
      c_softmax_cross_entropy_backward cb (h logits) (h labels) (h dlogits))

let sgd_update cb ?(momentum = 0.0) ?(weight_decay = 0.0) ?(nesterov = false) ?velocity hyper
    param grad =
  record cb ([ hyper; param; grad ] @ opt velocity) (fun cb ->
      c_sgd_update cb momentum weight_decay nesterov (h hyper) (h param) (h grad) (oh velocity))

let adam_update cb ?(beta1 = 0.9) ?(beta2 = 0.999) ?(eps = 1e-8) ?(weight_decay = 0.0) hyper
    param grad ~m ~v =
  record cb [ hyper; param; grad; m; v ] (fun cb ->
      c_adam_update cb beta1 beta2 eps weight_decay (h hyper) (h param) (h grad) (h m) (h v))

(* ---- mixed precision: float32 masters from half gradients, and loss scaling ---- *)

external c_sgd_update_mixed :
  Cmdbuf.handle -> float -> float -> bool -> Tensor.handle -> Tensor.handle option ->
  Tensor.handle -> Tensor.handle -> Tensor.handle option -> Tensor.handle option -> unit
  = "neatml_sgd_update_mixed_bc" "neatml_sgd_update_mixed"

external c_adam_update_mixed :
  Cmdbuf.handle -> float -> float -> float -> float -> Tensor.handle -> Tensor.handle option ->
  Tensor.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle option ->
  unit = "neatml_adam_update_mixed_bc" "neatml_adam_update_mixed"

let sgd_update_mixed cb ?(momentum = 0.0) ?(weight_decay = 0.0) ?(nesterov = false) ?velocity
    ?scaler ?param hyper master grad =
  record cb
    ([ hyper; master; grad ] @ opt velocity @ opt scaler @ opt param)
    (fun cb ->
      c_sgd_update_mixed cb momentum weight_decay nesterov (h hyper) (oh scaler) (h master)
        (h grad) (oh velocity) (oh param))

let adam_update_mixed cb ?(beta1 = 0.9) ?(beta2 = 0.999) ?(eps = 1e-8) ?(weight_decay = 0.0)
    ?scaler ?param hyper master grad ~m ~v =
  record cb
    ([ hyper; master; grad; m; v ] @ opt scaler @ opt param)
    (fun cb ->
      c_adam_update_mixed cb beta1 beta2 eps weight_decay (h hyper) (oh scaler) (h master)
        (h grad) (h m) (h v) (oh param))

module Loss_scale = struct
  type params = { growth_factor : float; backoff_factor : float; growth_interval : int }

  let default = { growth_factor = 2.0; backoff_factor = 0.5; growth_interval = 2000 }

  external c_scale : Cmdbuf.handle -> Tensor.handle -> Tensor.handle -> Tensor.handle -> unit
    = "neatml_loss_scale"

  external c_check : Cmdbuf.handle -> Tensor.handle array -> Tensor.handle -> unit
    = "neatml_loss_scale_check"

  external c_update : Cmdbuf.handle -> float -> float -> int -> Tensor.handle -> unit
    = "neatml_loss_scale_update"

  let create ?(scale = 65536.0) dev = Tensor.of_array dev [| 3 |] [| scale; 0.0; 0.0 |]

  let scale cb scaler x ~out =
    record cb [ scaler; x; out ] (fun cb -> c_scale cb (h scaler) (h x) (h out))

  let check cb tensors scaler =
    record cb (scaler :: tensors) (fun cb ->
        c_check cb (Array.of_list (List.map h tensors)) (h scaler))

  let update cb ?(params = default) scaler =
    record cb [ scaler ] (fun cb ->
        c_update cb params.growth_factor params.backoff_factor params.growth_interval
          (h scaler))
end

(* ---- collectives: recorded like the ops; the buffer keeps the comm alive too ---- *)

external c_all_reduce :
  Cmdbuf.handle -> Comm.handle -> reduce_op -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_all_reduce"

external c_all_reduce_bucket :
  Cmdbuf.handle -> Comm.handle -> reduce_op -> Tensor.handle array -> unit
  = "neatml_all_reduce_bucket"

external c_broadcast : Cmdbuf.handle -> Comm.handle -> int -> Tensor.handle -> Tensor.handle -> unit
  = "neatml_broadcast"

let record_collective cb (comm : Comm.t) ts f =
  Cmdbuf.recording cb (Comm comm.h :: kept ts) (fun cb -> f cb comm.h)

let all_reduce cb comm ?(op = Sum) x ~out =
  record_collective cb comm [ x; out ] (fun cb c -> c_all_reduce cb c op (h x) (h out))

let all_reduce_bucket cb comm ?(op = Sum) tensors =
  record_collective cb comm tensors (fun cb c ->
      c_all_reduce_bucket cb c op (Array.of_list (List.map h tensors)))

let broadcast cb comm ~root x ~out =
  record_collective cb comm [ x; out ] (fun cb c -> c_broadcast cb c root (h x) (h out))

let () =
  (* A stub compiled against another major.minor than the library it loaded may pass wrong
     enum values or struct layouts: refuse to start rather than compute garbage. Patch
     releases keep the ABI. The backend variant must have one constructor per backend the
     library names, in its order. *)
  if version_number () / 100 <> header_version_number () / 100 then
    failwith
      (Printf.sprintf "Neatml.Gpu: compiled against neatml %d, linked with neatml %d"
         (header_version_number ()) (version_number ()));
  if Backend.count () <> 4 then
    failwith
      (Printf.sprintf "Neatml.Gpu: the library has %d backends, these bindings know 4"
         (Backend.count ()))
