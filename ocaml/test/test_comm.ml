(* test_comm.ml — comms and collectives on one rank (no peers, no MPI needed): with one rank
   an all-reduce (sum or average) and a broadcast give back x, so every case checks that
   the output is x's value at that commit, in place and out of place, replayed with new
   inputs. Then ids as text, the errors, and the lifetimes the bindings add: a buffer
   keeps its comm alive, a device freed first takes its comms with it. Multi-rank runs are
   the C suite's (tests/test_collectives.c). *)

module G = Neatml.Gpu

let floats ~salt n = Array.init n (fun i -> float ((i * 7 + salt) mod 13) -. 6.0)

let check_values name expected t =
  Alcotest.(check (array (float 0.0))) name expected (G.Tensor.to_array t)

let backend dev = (G.Device.info dev).backend
let single dev = G.Comm.create dev (G.Comm.Id.create (backend dev)) ~nranks:1 ~rank:0

(* Record with [record cb x ~out], then commit twice, writing new values into x between:
   each time out must hold x's current value. *)
let check_replay dev name ~in_place record =
  let n = 12 in
  let x = G.Tensor.of_array dev [| 3; 4 |] (floats ~salt:0 n) in
  let out = if in_place then x else G.Tensor.of_array dev [| n |] (Array.make n Float.nan) in
  let cb = G.Cmdbuf.create dev in
  record cb x ~out;
  List.iter
    (fun salt ->
      let v = floats ~salt n in
      G.Tensor.write_array x v;
      G.Cmdbuf.run cb;
      check_values (Printf.sprintf "%s, commit with salt %d" name salt) v out;
      if not in_place then check_values (name ^ ": x unchanged") v x)
    [ 1; 5 ];
  G.Cmdbuf.free cb

let test_values dev () =
  let d = dev () in
  let comm = single d in
  Alcotest.(check (pair int int)) "rank, nranks" (0, 1) (G.Comm.rank comm, G.Comm.nranks comm);
  List.iter
    (fun in_place ->
      let where = if in_place then "in place" else "out of place" in
      List.iter
        (fun (op, name) ->
          check_replay d (name ^ " " ^ where) ~in_place (fun cb x ~out -> G.all_reduce cb comm ~op x ~out))
        [ (G.Sum, "sum"); (G.Avg, "avg") ];
      check_replay d ("default op " ^ where) ~in_place (fun cb x ~out -> G.all_reduce cb comm x ~out);
      check_replay d ("broadcast " ^ where) ~in_place (fun cb x ~out -> G.broadcast cb comm ~root:0 x ~out))
    [ false; true ];
  G.Comm.free comm

(* Separate tensors (packed into scratch) with empty ones, and views of one flat buffer in
   order (reduced where they lie); each keeps its values, replayed. *)
let test_bucket dev () =
  let d = dev () in
  let comm = single d in
  let separate () =
    List.mapi
      (fun i shape ->
        let n = Array.fold_left ( * ) 1 shape in
        G.Tensor.of_array d shape (floats ~salt:i n))
      [ [| 0 |]; [| 1 |]; [| 3; 5 |]; [| 7 |]; [| 2; 2 |]; [| 0; 4 |] ]
  in
  let views () =
    let flat = G.Tensor.of_array d [| 24 |] (floats ~salt:3 24) in
    [ G.Tensor.view flat [| 24 |] ]
  in
  List.iter
    (fun (name, tensors, op) ->
      let before = List.map G.Tensor.to_array tensors in
      let cb = G.Cmdbuf.create d in
      G.all_reduce_bucket cb comm ~op tensors;
      for commit = 1 to 2 do
        G.Cmdbuf.run cb;
        List.iteri
          (fun i (t, v) -> check_values (Printf.sprintf "%s: tensor %d, commit %d" name i commit) v t)
          (List.combine tensors before)
      done;
      G.Cmdbuf.free cb)
    [ ("separate, sum", separate (), G.Sum); ("separate, avg", separate (), G.Avg);
      ("one view of a flat buffer", views (), G.Avg); ("empty list", [], G.Sum) ];
  G.Comm.free comm

let test_create_all dev () =
  let d = dev () in
  match G.Comm.create_all [| d |] with
  | [| c |] ->
      Alcotest.(check (pair int int)) "rank, nranks" (0, 1) (G.Comm.rank c, G.Comm.nranks c);
      Alcotest.(check bool) "its device" true (G.Device.equal d (G.Comm.device c));
      check_replay d "all_reduce on create_all's comm" ~in_place:false (fun cb x ~out ->
          G.all_reduce cb c x ~out);
      G.Comm.set_timeout c 5.0;
      G.Comm.set_timeout c 0.0;
      G.Comm.free c
  | cs -> Alcotest.failf "create_all of one device gave %d comms" (Array.length cs)

let test_id_text dev () =
  let b = backend (dev ()) in
  let id = G.Comm.Id.create b in
  let text = G.Comm.Id.to_string id in
  Alcotest.(check int) "256 digits" 256 (String.length text);
  String.iter
    (fun c -> if not (String.contains "0123456789abcdef" c) then Alcotest.failf "%C in %S" c text)
    text;
  let same name id' = Alcotest.(check bool) name true (G.Comm.Id.equal id id' && id = id') in
  same "round trip" (G.Comm.Id.of_string text);
  same "with a newline and spaces" (G.Comm.Id.of_string ("  " ^ text ^ "\n"));
  same "upper case" (G.Comm.Id.of_string (String.uppercase_ascii text));
  Alcotest.(check int) "hash of equal ids" (G.Comm.Id.hash id)
    (G.Comm.Id.hash (G.Comm.Id.of_string text));
  Alcotest.(check bool) "a second id differs" false (G.Comm.Id.equal id (G.Comm.Id.create b));
  Alcotest.(check bool) "of_string_opt of a bad text" true (G.Comm.Id.of_string_opt "xyz" = None)

(* A buffer keeps the comm it recorded; the GC's finalizer of a comm waits for nothing; a
   device freed with comms open takes them first; identity survives free. *)
let test_lifetime dev () =
  let d = dev () in
  let x = G.Tensor.of_array d [| 4 |] [| 1.; 2.; 3.; 4. |] in
  let out = G.Tensor.create d [| 4 |] in
  let cb = G.Cmdbuf.create d in
  G.all_reduce cb (single d) x ~out;
  for _ = 1 to 3 do
    Gc.full_major ();
    G.collect ()
  done;
  G.Cmdbuf.run cb;
  check_values "the buffer kept its comm" [| 1.; 2.; 3.; 4. |] out;
  G.Cmdbuf.free cb;
  ignore (Sys.opaque_identity (single d));
  Gc.full_major ();
  G.collect ();
  let c = single d in
  let table = Hashtbl.create 1 in
  Hashtbl.replace table c ();
  G.Comm.free c;
  G.Comm.free c;
  Alcotest.(check bool) "equal after free" true (G.Comm.equal c c && Hashtbl.mem table c);
  let other = G.Device.create ~backend:(backend d) () in
  let c = single other in
  G.Device.free other;
  (match G.Comm.rank c with
  | _ -> Alcotest.fail "a comm of a freed device answered"
  | exception G.Error (G.Status.Invalid_handle, _) -> ());
  G.Comm.free c

let expect_error ~status ~msg f () =
  match f () with
  | () -> Alcotest.failf "expected Error (%s, _), the call succeeded" (G.Status.to_string status)
  | exception G.Error (got, text) ->
      if got <> status then
        Alcotest.failf "status %s, expected %s (%s)" (G.Status.to_string got) (G.Status.to_string status) text;
      if not (Astring_like.contains text msg) then
        Alcotest.failf "message %S does not contain %S" text msg

let error_tests dev =
  let t shape = G.Tensor.create (dev ()) shape in
  let id () = G.Comm.Id.create (backend (dev ())) in
  let record f = f (G.Cmdbuf.create (dev ())) in
  let freed () = let c = single (dev ()) in G.Comm.free c; c in
  [
    ( "rank out of range", G.Status.Invalid_argument, "rank is 1: must be in 0..0",
      fun () -> ignore (G.Comm.create (dev ()) (id ()) ~nranks:1 ~rank:1) );
    ( "negative rank", G.Status.Invalid_argument, "neat_comm_create",
      fun () -> ignore (G.Comm.create (dev ()) (id ()) ~nranks:2 ~rank:(-1)) );
    ( "no ranks", G.Status.Invalid_argument, "nranks is 0",
      fun () -> ignore (G.Comm.create (dev ()) (id ()) ~nranks:0 ~rank:0) );
    ( "comm on a freed device", G.Status.Invalid_handle, "after free",
      fun () ->
        let d = G.Device.create ~backend:(backend (dev ())) () in
        G.Device.free d;
        ignore (G.Comm.create d (id ()) ~nranks:1 ~rank:0) );
    ( "create_all of no device", G.Status.Invalid_argument, "ndev is 0",
      fun () -> ignore (G.Comm.create_all [||]) );
    ( "create_all of one device twice", G.Status.Invalid_argument, "the same device",
      fun () -> ignore (G.Comm.create_all [| dev (); dev () |]) );
    ( "id text too short", G.Status.Invalid_argument, "not an id",
      fun () -> ignore (G.Comm.Id.of_string "0123abcd") );
    ( "id text with a non-digit", G.Status.Invalid_argument, "found a non-digit at 3",
      fun () -> ignore (G.Comm.Id.of_string ("abcg" ^ String.make 252 '0')) );
    ( "id text followed by more", G.Status.Invalid_argument, "text after the 256 hex digits",
      fun () -> ignore (G.Comm.Id.of_string (String.make 256 '0' ^ " 0")) );
    ( "id text with a NUL byte", G.Status.Invalid_argument, "NUL",
      fun () -> ignore (G.Comm.Id.of_string (String.make 256 '0' ^ "\000x")) );
    ( "negative timeout", G.Status.Invalid_argument, "neat_comm_set_timeout",
      fun () -> G.Comm.set_timeout (single (dev ())) (-1.0) );
    ( "NaN timeout", G.Status.Invalid_argument, "must be >= 0",
      fun () -> G.Comm.set_timeout (single (dev ())) Float.nan );
    ( "comm of another device", G.Status.Device_mismatch, "comm belongs to another device",
      fun () ->
        let other = G.Device.create ~backend:(backend (dev ())) () in
        Fun.protect ~finally:(fun () -> G.Device.free other) (fun () ->
            let a = t [| 4 |] in
            record (fun cb -> G.all_reduce cb (single other) a ~out:a)) );
    ( "all_reduce on a freed comm", G.Status.Invalid_handle, "comm used after free",
      fun () -> let a = t [| 4 |] in record (fun cb -> G.all_reduce cb (freed ()) a ~out:a) );
    ( "bucket on a freed comm", G.Status.Invalid_handle, "comm used after free",
      fun () -> record (fun cb -> G.all_reduce_bucket cb (freed ()) [ t [| 4 |] ]) );
    ( "broadcast on a freed comm", G.Status.Invalid_handle, "comm used after free",
      fun () -> let a = t [| 4 |] in record (fun cb -> G.broadcast cb (freed ()) ~root:0 a ~out:a) );
    ( "rank of a freed comm", G.Status.Invalid_handle, "comm used after free",
      fun () -> ignore (G.Comm.rank (freed ())) );
    ( "commit after the comm was freed", G.Status.Invalid_handle, "neat_cmdbuf_commit",
      fun () ->
        let c = single (dev ()) and a = t [| 4 |] in
        record (fun cb -> G.all_reduce cb c a ~out:a; G.Comm.free c; G.Cmdbuf.commit cb) );
    ( "bucket with a freed tensor", G.Status.Invalid_handle, "tensor used after free",
      fun () ->
        let a = t [| 4 |] in
        G.Tensor.free a;
        record (fun cb -> G.all_reduce_bucket cb (single (dev ())) [ t [| 2 |]; a ]) );
    ( "bucket with a tensor twice", G.Status.Invalid_argument, "share memory",
      fun () -> let a = t [| 4 |] in record (fun cb -> G.all_reduce_bucket cb (single (dev ())) [ a; a ]) );
    ( "all_reduce of different counts", G.Status.Shape_mismatch, "neat_all_reduce",
      fun () -> record (fun cb -> G.all_reduce cb (single (dev ())) (t [| 4 |]) ~out:(t [| 5 |])) );
    ( "broadcast root out of range", G.Status.Invalid_argument, "root is 1",
      fun () -> let a = t [| 4 |] in record (fun cb -> G.broadcast cb (single (dev ())) ~root:1 a ~out:a) );
    (* OCaml ints past C's int: their low 32 bits (0 here) would be a valid rank or root *)
    ( "rank past a C int", G.Status.Invalid_argument, "rank is 4294967296: it does not fit a C int",
      fun () -> ignore (G.Comm.create (dev ()) (id ()) ~nranks:1 ~rank:(1 lsl 32)) );
    ( "nranks past a C int", G.Status.Invalid_argument, "nranks is 4294967297",
      fun () -> ignore (G.Comm.create (dev ()) (id ()) ~nranks:((1 lsl 32) + 1) ~rank:0) );
    ( "broadcast root past a C int", G.Status.Invalid_argument, "root is 4294967296",
      fun () ->
        let a = t [| 4 |] in
        record (fun cb -> G.broadcast cb (single (dev ())) ~root:(1 lsl 32) a ~out:a) );
  ]

let tests (dev : unit -> G.Device.t) =
  let tc name f = Alcotest.test_case name `Quick f in
  [ tc "one rank: all_reduce sum, avg, broadcast, replayed" (test_values dev);
    tc "one rank: all_reduce_bucket" (test_bucket dev);
    tc "create_all of one device, timeout" (test_create_all dev);
    tc "id as text" (test_id_text dev);
    tc "lifetimes" (test_lifetime dev) ]
  @ List.map
      (fun (name, status, msg, f) -> tc ("error: " ^ name) (expect_error ~status ~msg f))
      (error_tests dev)
