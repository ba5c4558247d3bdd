(* test_objects.ml — what the bindings add around the library's objects: zeroed tensors,
   identity that survives free, finalizers that never wait for the device, command buffers
   that let their tensors go once dropped, and the library's backend names. *)

module G = Neatml.Gpu

let now = Unix.gettimeofday
let in_use d = (G.Device.memory_stats d).in_use

(* Release all garbage of earlier tests: a dropped command buffer's tensors go one cycle
   after the buffer. *)
let settle () =
  for _ = 1 to 3 do
    Gc.full_major ();
    G.collect ()
  done

(* The memory of a freed tensor is cached by the device's pool and handed to the next tensor
   of its size: dirty it first, so that zeros must really clear it. *)
let test_zeros dev () =
  let d = dev () in
  List.iter
    (fun shape ->
      let n = Array.fold_left ( * ) 1 shape in
      G.Tensor.free (G.Tensor.of_array d shape (Array.make n 7.0));
      let z = G.Tensor.zeros d shape in
      Alcotest.(check (array int)) "shape" shape (G.Tensor.shape z);
      Alcotest.(check (array (float 0.0))) "zeros" (Array.make n 0.0) (G.Tensor.to_array z))
    [ [||]; [| 5 |]; [| 3; 4 |]; [| 2; 3; 4 |]; [| 2; 1; 3; 2 |]; [| 0; 4 |]; [| 1 lsl 16 |] ]

module Tensor_table = Hashtbl.Make (G.Tensor)

let test_identity dev () =
  let d = dev () in
  let ts = List.init 20 (fun i -> G.Tensor.create d [| i + 1 |]) in
  let parent = List.hd ts in
  let v = G.Tensor.view parent [| 1 |] in
  let keys = v :: ts in
  let poly = Hashtbl.create 16 and table = Tensor_table.create 16 in
  List.iteri (fun i t -> Hashtbl.replace poly t i; Tensor_table.replace table t i) keys;
  let hashes = List.map Hashtbl.hash keys in
  List.iteri (fun i t -> if i mod 2 = 0 then G.Tensor.free t) keys;
  Gc.full_major ();
  List.iteri
    (fun i t ->
      let name what = Printf.sprintf "tensor %d (%s): %s" i (if i mod 2 = 0 then "freed" else "live") what in
      Alcotest.(check bool) (name "equals itself") true (t = t && G.Tensor.equal t t);
      Alcotest.(check int) (name "compare") 0 (compare t t);
      Alcotest.(check int) (name "hash unchanged") (List.nth hashes i) (Hashtbl.hash t);
      Alcotest.(check int) (name "G.Tensor.hash is Hashtbl.hash") (Hashtbl.hash t) (G.Tensor.hash t);
      Alcotest.(check (option int)) (name "found in a Hashtbl") (Some i) (Hashtbl.find_opt poly t);
      Alcotest.(check (option int)) (name "found in a Hashtbl.Make") (Some i) (Tensor_table.find_opt table t))
    keys;
  Alcotest.(check bool) "a view is another tensor" false (G.Tensor.equal v parent);
  Alcotest.(check bool) "distinct tensors differ" false (List.nth ts 1 = List.nth ts 2);
  Alcotest.(check bool) "compare is antisymmetric" true
    (compare (List.nth ts 1) (List.nth ts 2) = -compare (List.nth ts 2) (List.nth ts 1));
  (* a command buffer: recording, reset and free change neither its hash nor its equality *)
  let cb = G.Cmdbuf.create d and x = List.nth keys 3 (* live *) in
  let h0 = Hashtbl.hash cb in
  G.fill cb ~out:x 1.0;
  G.scale cb x 2.0 ~out:x;
  Alcotest.(check int) "cmdbuf hash after recording" h0 (Hashtbl.hash cb);
  G.Cmdbuf.run cb;
  G.Cmdbuf.reset cb;
  G.Cmdbuf.free cb;
  Alcotest.(check int) "cmdbuf hash after free" h0 (G.Cmdbuf.hash cb);
  Alcotest.(check bool) "cmdbuf equals itself after free" true (cb = cb && G.Cmdbuf.equal cb cb);
  Alcotest.(check bool) "another cmdbuf differs" false (G.Cmdbuf.equal cb (G.Cmdbuf.create d));
  (* a device *)
  let other = G.Device.create ~backend:(G.Device.info d).backend () in
  let hd = Hashtbl.hash other in
  G.Device.free other;
  Alcotest.(check int) "device hash after free" hd (G.Device.hash other);
  Alcotest.(check bool) "device equals itself after free" true (other = other && G.Device.equal other other);
  Alcotest.(check bool) "two devices differ" false (G.Device.equal d other)

(* Tensors become garbage while a long command buffer runs: Gc.full_major must return at
   once and give their memory back at once (their finalizers destroy them, and a destroy
   never waits for the device), and the buffer's result must be right. A finalizer that
   waited for the device would take the whole buffer's time inside the GC. *)
let test_finalizers_never_block dev () =
  let d = dev () in
  let n = 256 in
  let a0 = Array.init (n * n) (fun i -> float ((i * 7) mod 11) /. 11.0) in
  let a = G.Tensor.of_array d [| n; n |] a0 and c = G.Tensor.create d [| n; n |] in
  (* One try: [reps] matmuls committed, garbage dropped, Gc.full_major while they run.
     Returns the seconds of the collection and of the buffer. *)
  let attempt reps =
    let cb = G.Cmdbuf.create d in
    for _ = 1 to reps do
      G.matmul cb a a ~out:c
    done;
    settle ();
    let base = in_use d in
    let garbage_bytes = 100 * 16384 * 4 in
    let make_garbage () =
      ignore (Sys.opaque_identity (List.init 100 (fun _ -> G.Tensor.create d [| 16384 |])))
    in
    make_garbage ();
    let with_garbage = in_use d in
    let t0 = now () in
    G.Cmdbuf.commit cb;
    let t1 = now () in
    Gc.full_major ();
    let t2 = now () in
    let after_gc = in_use d in
    G.Cmdbuf.wait cb;
    let t3 = now () in
    Printf.printf "finalizers: %d matmuls, commit %.3f s, Gc.full_major %.3f s, buffer %.3f s\n%!"
      reps (t1 -. t0) (t2 -. t1) (t3 -. t0);
    Alcotest.(check bool) "the garbage holds device memory" true
      (with_garbage >= base + garbage_bytes);
    (* the running buffer may take a little scratch memory meanwhile *)
    Alcotest.(check bool) "the GC gave the garbage's memory back at once" true
      (after_gc < with_garbage - (garbage_bytes / 2));
    G.Cmdbuf.free cb;
    (t2 -. t1, t3 -. t0)
  in
  (* The buffer must run long enough to tell a collection that waited for it from one that
     did not: double the work until it lasts 0.3 s (a shared machine's speed varies). *)
  let rec until_long reps =
    let gc, buffer = attempt reps in
    if buffer >= 0.3 || reps >= 1 lsl 16 then (gc, buffer) else until_long (2 * reps)
  in
  let gc, buffer = until_long 16 in
  Alcotest.(check bool) "Gc.full_major did not wait for the buffer" true (gc < 0.5 *. buffer);
  let expected = Reference.matmul ~m:n ~n ~k:n ~alpha:1.0 ~beta:0.0 ~ta:false ~tb:false a0 a0 [||] in
  let got = G.Tensor.to_array c in
  Array.iteri
    (fun i e ->
      if Float.abs (got.(i) -. e) > 1e-4 *. (1.0 +. Float.abs e) then
        Alcotest.failf "matmul element %d is %g, reference %g" i got.(i) e)
    expected

(* A command buffer dropped without free keeps its tensors only until its finalizer has run
   and a drain has removed its root; then they go too. *)
let test_dropped_cmdbuf dev () =
  let d = dev () in
  settle ();
  let base = in_use d in
  let record () =
    let cb = G.Cmdbuf.create d in
    let x = G.Tensor.create d [| 4096 |] in
    G.fill cb ~out:x 3.0;
    G.Cmdbuf.run cb
  in
  record ();
  Alcotest.(check bool) "the tensor holds memory" true (in_use d > base);
  (* the first cycle finalizes the buffer; the drain removes its root; the second cycle
     finalizes the tensor it kept *)
  Gc.full_major ();
  G.collect ();
  Gc.full_major ();
  G.collect ();
  Alcotest.(check int) "memory back" base (in_use d)

let test_backend_names dev () =
  List.iter
    (fun (b, name) ->
      Alcotest.(check string) "to_string" name (G.Backend.to_string b);
      Alcotest.(check bool) ("of_string " ^ name) true (G.Backend.of_string name = b);
      Alcotest.(check bool) "any case" true (G.Backend.of_string (String.uppercase_ascii name) = b);
      Alcotest.(check bool) "of_string_opt" true (G.Backend.of_string_opt name = Some b))
    G.Backend.[ (Auto, "auto"); (Cpu, "cpu"); (Cuda, "cuda"); (Metal, "metal") ];
  Alcotest.(check bool) "unknown name" true (G.Backend.of_string_opt "tpu" = None);
  Alcotest.(check bool) "auto is built" true (G.Backend.is_built G.Backend.Auto);
  Alcotest.(check bool) "cpu is built" true (G.Backend.is_built G.Backend.Cpu);
  Alcotest.(check bool) "the device's backend is built" true
    (G.Backend.is_built (G.Device.info (dev ())).backend)

let tests (dev : unit -> G.Device.t) =
  let tc name f = Alcotest.test_case name `Quick f in
  [
    tc "Tensor.zeros reads zeros on reused memory" (test_zeros dev);
    tc "equality and hashing survive free" (test_identity dev);
    tc "finalizers never wait for the device" (test_finalizers_never_block dev);
    tc "a dropped command buffer lets its tensors go" (test_dropped_cmdbuf dev);
    tc "backend names round trip through the C library" (test_backend_names dev);
  ]
