(* test_errors.ml — each kind of failure raises Neatml.Gpu.Error with the library's status
   and a message naming the call. One row per case: name, expected status, a substring of
   the message, the failing action. (Backend_error/Internal need a failing driver: no input
   of ours can produce them.) *)

module G = Neatml.Gpu

let status = Alcotest.testable (fun ppf s -> Format.pp_print_string ppf (G.Status.to_string s)) ( = )

let expect_error ~status:want ~msg f () =
  match f () with
  | () -> Alcotest.failf "expected Error (%s, _), the call succeeded" (G.Status.to_string want)
  | exception G.Error (got, text) ->
      Alcotest.check status "status" want got;
      if not (Astring_like.contains text msg) then
        Alcotest.failf "message %S does not contain %S" text msg

let tests (dev : unit -> G.Device.t) =
  let t shape = G.Tensor.create (dev ()) shape in
  let record f = f (G.Cmdbuf.create (dev ())) in
  let rows =
    [
      ( "shape mismatch", G.Status.Shape_mismatch, "neat_matmul",
        fun () -> record (fun cb -> G.matmul cb (t [| 2; 5 |]) (t [| 3; 7 |]) ~out:(t [| 2; 7 |])) );
      ( "negative size", G.Status.Invalid_argument, "neat_tensor_create", fun () -> ignore (t [| 3; -1 |]) );
      ( "element types mixed", G.Status.Dtype_mismatch, "neat_add",
        fun () ->
          let h = G.Tensor.create ~dtype:G.Dtype.Bf16 (dev ()) [| 4 |] in
          record (fun cb -> G.add cb (t [| 4 |]) h ~out:(t [| 4 |])) );
      ( "five dimensions", G.Status.Invalid_argument, "4 dimensions", fun () -> ignore (t [| 1; 1; 1; 1; 1 |]) );
      ( "five-dimensional Bigarray", G.Status.Invalid_argument, "4 dimensions",
        fun () ->
          ignore (G.Tensor.of_bigarray (dev ()) (Bigarray.Genarray.create Bigarray.float32 Bigarray.c_layout [| 1; 1; 1; 1; 1 |])) );
      ( "conv stride 0", G.Status.Invalid_argument, "neat_conv2d_forward",
        fun () ->
          record (fun cb ->
              G.conv2d_forward cb (G.Conv2d.make ~stride:0 3 3) (t [| 1; 1; 5; 5 |]) (t [| 1; 1; 3; 3 |]) ~out:(t [| 1; 1; 3; 3 |])) );
      ( "sum axis out of range", G.Status.Invalid_argument, "neat_sum_axis",
        fun () -> record (fun cb -> G.sum_axis cb (t [| 2; 3 |]) 2 ~out:(t [| 2 |])) );
      (* OCaml ints past C's int: their low 32 bits would be a valid axis or index *)
      ( "sum axis past a C int", G.Status.Invalid_argument, "axis is 4294967296: it does not fit a C int",
        fun () -> record (fun cb -> G.sum_axis cb (t [| 2; 3 |]) (1 lsl 32) ~out:(t [| 3 |])) );
      ( "device index past a C int", G.Status.Invalid_argument, "index is 4294967296",
        fun () -> ignore (G.Device.create ~backend:G.Backend.Cpu ~index:(1 lsl 32) ()) );
      ( "device index max_int", G.Status.Invalid_argument, "index is 4611686018427387903",
        fun () -> ignore (G.Device.create ~backend:G.Backend.Cpu ~index:max_int ()) );
      ( "output aliases input", G.Status.Invalid_argument, "neat_matmul",
        fun () -> let a = t [| 3; 3 |] in record (fun cb -> G.matmul cb a a ~out:a) );
      ( "record into a committed buffer", G.Status.Invalid_argument, "neat_fill",
        fun () ->
          record (fun cb ->
              G.Cmdbuf.commit cb;
              G.Cmdbuf.wait cb;
              G.fill cb ~out:(t [| 2 |]) 1.0) );
      ( "write count mismatch", G.Status.Shape_mismatch, "neat_tensor_write",
        fun () -> G.Tensor.write_array (t [| 2; 3 |]) [| 1.0; 2.0 |] );
      ( "read count mismatch", G.Status.Shape_mismatch, "neat_tensor_read",
        fun () -> G.Tensor.read (t [| 4 |]) (Bigarray.Genarray.create Bigarray.float32 Bigarray.c_layout [| 5 |]) );
      ( "copy from host, count mismatch", G.Status.Shape_mismatch, "neat_copy_from_host",
        fun () ->
          record (fun cb ->
              G.copy_from_host cb (Bigarray.Genarray.create Bigarray.float32 Bigarray.c_layout [| 5 |]) ~out:(t [| 4 |])) );
      ( "copy to host, count mismatch", G.Status.Shape_mismatch, "neat_copy_to_host",
        fun () ->
          record (fun cb ->
              G.copy_to_host cb (t [| 2; 2 |]) ~out:(Bigarray.Genarray.create Bigarray.float32 Bigarray.c_layout [| 3 |])) );
      ( "negative memory limit", G.Status.Invalid_argument, "neat_device_set_memory_limit",
        fun () -> G.Device.set_memory_limit (dev ()) (-1) );
      ( "view of another element count", G.Status.Shape_mismatch, "neat_tensor_view",
        fun () -> ignore (G.Tensor.view (t [| 2; 3 |]) [| 7 |]) );
      ( "unknown backend name", G.Status.Invalid_argument, "is not one of auto, cpu, cuda, metal",
        fun () -> ignore (G.Backend.of_string "tpu") );
      ( "backend name with a NUL byte", G.Status.Invalid_argument, "NUL",
        fun () -> ignore (G.Backend.of_string "cpu\000x") );
      ( "zero GC budget", G.Status.Invalid_argument, "gc_budget",
        fun () -> ignore (G.Device.create ~gc_budget:0 ()) );
      ( "zeros of a negative size", G.Status.Invalid_argument, "negative",
        fun () -> ignore (G.Tensor.zeros (dev ()) [| -2 |]) );
      ( "negative device index", G.Status.Invalid_argument, "neat_device_create",
        fun () -> ignore (G.Device.create ~backend:G.Backend.Cpu ~index:(-1) ()) );
      ( "device mismatch", G.Status.Device_mismatch, "neat_add",
        fun () ->
          let other = G.Device.create ~backend:(G.Device.info (dev ())).backend () in
          let a = t [| 4 |] and b = G.Tensor.create other [| 4 |] in
          Fun.protect ~finally:(fun () -> G.Device.free other) (fun () -> record (fun cb -> G.add cb a b ~out:a)) );
      ( "out of memory", G.Status.Out_of_memory, "memory",
        (* 2^42 floats: 16 TiB, more than any machine this runs on *)
        fun () -> ignore (t [| 1 lsl 21; 1 lsl 21 |]) );
      ( "tensor used after free", G.Status.Invalid_handle, "after free",
        fun () -> let a = t [| 2 |] in G.Tensor.free a; ignore (G.Tensor.shape a) );
      ( "freed tensor as optional argument", G.Status.Invalid_handle, "after free",
        fun () ->
          let b = t [| 3 |] in
          G.Tensor.free b;
          record (fun cb -> G.linear_forward cb ~bias:b (t [| 2; 4 |]) (t [| 3; 4 |]) ~out:(t [| 2; 3 |])) );
      ( "command buffer used after free", G.Status.Invalid_handle, "after free",
        fun () -> record (fun cb -> G.Cmdbuf.free cb; G.fill cb ~out:(t [| 2 |]) 0.0) );
      ( "device used after free", G.Status.Invalid_handle, "after free",
        fun () -> let d = G.Device.create () in G.Device.free d; ignore (G.Tensor.create d [| 2 |]) );
      ( "tensor of a freed device", G.Status.Invalid_handle, "neat_tensor",
        (* the tensor's own handle was never freed by us: the library detects it is stale *)
        fun () ->
          let d = G.Device.create () in
          let a = G.Tensor.create d [| 2 |] in
          G.Device.free d;
          ignore (G.Tensor.to_array a) );
      ( "commit after a recorded tensor was freed", G.Status.Invalid_handle, "neat_cmdbuf_commit",
        fun () ->
          let a = t [| 2 |] in
          record (fun cb -> G.fill cb ~out:a 1.0; G.Tensor.free a; G.Cmdbuf.commit cb) );
      ( "label out of range, reported by wait", G.Status.Invalid_argument, "label",
        fun () ->
          let logits = G.Tensor.of_array (dev ()) [| 2; 3 |] [| 0.; 1.; 2.; 3.; 4.; 5. |] in
          let labels = G.Tensor.of_array (dev ()) [| 2 |] [| 1.0; 7.0 |] in
          record (fun cb ->
              G.softmax_cross_entropy cb logits labels ~out:(t [| 1 |]);
              G.Cmdbuf.commit cb;
              G.Cmdbuf.wait cb) );
    ]
  in
  (* Metal is built on macOS only: elsewhere asking for it must answer Unsupported. *)
  let on_macos = Sys.file_exists "/System/Library/Frameworks/Metal.framework" in
  let rows =
    if on_macos then rows
    else
      rows
      @ [ ( "backend not built", G.Status.Unsupported, "neat_device_create",
            fun () -> ignore (G.Device.create ~backend:G.Backend.Metal ()) ) ]
  in
  List.map
    (fun (name, st, msg, f) -> Alcotest.test_case name `Quick (expect_error ~status:st ~msg f))
    rows
