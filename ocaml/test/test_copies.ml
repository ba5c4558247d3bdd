(* test_copies.ml — what runs inside a command buffer besides the ops: the recorded host
   copies (their timing, the Bigarrays the buffer keeps alive, their fate after a failed op),
   the device's memory limit, and run-time failures reported by synchronize. *)

module G = Neatml.Gpu

let host n v = Bigarray.Genarray.create Bigarray.float32 Bigarray.c_layout [| n |] |> fun a ->
  Bigarray.Genarray.fill a v;
  a

let of_list l =
  Bigarray.genarray_of_array1 (Bigarray.Array1.of_array Bigarray.float32 Bigarray.c_layout (Array.of_list l))

let to_list a = List.init (Bigarray.Genarray.nth_dim a 0) (fun i -> Bigarray.Genarray.get a [| i |])
let floats = Alcotest.(list (float 1e-6))

(* A fresh device of the suite's backend, freed after f. *)
let with_device dev f =
  let d = G.Device.create ~backend:(G.Device.info (dev ())).backend () in
  Fun.protect ~finally:(fun () -> G.Device.free d) (fun () -> f d)

let expect_error ~status ~msg f =
  match f () with
  | () -> Alcotest.failf "expected Error (%s, _), the call succeeded" (G.Status.to_string status)
  | exception G.Error (got, text) ->
      Alcotest.(check string) "status" (G.Status.to_string status) (G.Status.to_string got);
      if not (Astring_like.contains text msg) then Alcotest.failf "message %S does not contain %S" text msg

(* src is read at commit: refilled right after, it feeds the next commit, not this one;
   dst holds this commit's result once wait returns. *)
let test_refill dev () =
  let d = dev () in
  let x = G.Tensor.create d [| 3 |] and y = G.Tensor.create d [| 3 |] in
  let src = of_list [ 1.; 2.; 3. ] and dst = host 3 Float.nan in
  let cb = G.Cmdbuf.create d in
  G.copy_from_host cb src ~out:x;
  G.scale cb x 2.0 ~out:y;
  G.copy_to_host cb y ~out:dst;
  Alcotest.(check int) "three ops" 3 (G.Cmdbuf.op_count cb);
  G.Cmdbuf.commit cb;
  Bigarray.Genarray.blit (of_list [ 10.; 20.; 30. ]) src;
  G.Cmdbuf.wait cb;
  Alcotest.check floats "first commit: the values at commit" [ 2.; 4.; 6. ] (to_list dst);
  G.Cmdbuf.run cb;
  Alcotest.check floats "second commit: the refilled values" [ 20.; 40.; 60. ] (to_list dst);
  (* a copy is flat: a [2;3] Bigarray feeds a [6] tensor *)
  let t6 = G.Tensor.create d [| 6 |] in
  let b23 = Bigarray.Genarray.create Bigarray.float32 Bigarray.c_layout [| 2; 3 |] in
  Bigarray.Genarray.fill b23 5.0;
  G.Cmdbuf.reset cb;
  G.copy_from_host cb b23 ~out:t6;
  G.Cmdbuf.run cb;
  Alcotest.(check (array (float 0.0))) "flat copy" (Array.make 6 5.0) (G.Tensor.to_array t6);
  G.Cmdbuf.free cb

(* A bad label stops the submission before the copy: dst keeps its contents, the message
   names the op (counted from 0); with the label fixed, committing again replays every op. *)
let test_failed_op dev () =
  let d = dev () in
  let logits = G.Tensor.of_array d [| 2; 3 |] [| 0.; 1.; 2.; 3.; 4.; 5. |] in
  let labels = G.Tensor.create d [| 2 |] and loss = G.Tensor.create d [| 1 |] in
  let labels_host = of_list [ 1.; 7. ] and loss_host = host 1 42.0 in
  let cb = G.Cmdbuf.create d in
  G.copy_from_host cb labels_host ~out:labels;
  G.softmax_cross_entropy cb logits labels ~out:loss;
  G.copy_to_host cb loss ~out:loss_host;
  G.Cmdbuf.commit cb;
  expect_error ~status:G.Status.Invalid_argument ~msg:"(op 1 of 3 in the command buffer)" (fun () ->
      G.Cmdbuf.wait cb);
  Alcotest.check floats "dst untouched after the failed op" [ 42.0 ] (to_list loss_host);
  Bigarray.Genarray.set labels_host [| 1 |] 2.0;
  G.Cmdbuf.run cb;
  (* rows [0;1;2] and [3;4;5] share log-sum-exp 2 + log(1 + e^-1 + e^-2) relative to the row *)
  let lse = log (1.0 +. exp (-1.0) +. exp (-2.0)) in
  let expected = ((2.0 +. lse -. 1.0) +. (2.0 +. lse -. 2.0)) /. 2.0 in
  Alcotest.check floats "after the fix, the loss" [ expected ] (to_list loss_host);
  G.Cmdbuf.free cb

(* The Bigarrays are reachable only through the buffer: collections must not free them. *)
let test_kept_alive dev () =
  let d = dev () in
  let x = G.Tensor.create d [| 4096 |] and y = G.Tensor.create d [| 4096 |] in
  let cb = G.Cmdbuf.create d in
  let record () =
    G.copy_from_host cb (host 4096 3.0) ~out:x;
    G.copy_to_host cb x ~out:(host 4096 0.0)
  in
  record ();
  G.scale cb x 2.0 ~out:y;
  for _ = 1 to 3 do
    Gc.full_major ();
    ignore (Sys.opaque_identity (List.init 1000 (fun _ -> Bigarray.Array1.create Bigarray.float32 Bigarray.c_layout 4096)))
  done;
  G.Cmdbuf.run cb;
  Alcotest.(check (array (float 0.0))) "the copy's source survived" (Array.make 4096 6.0) (G.Tensor.to_array y);
  G.Cmdbuf.free cb

(* A buffer that writes host memory, dropped while it runs: its finalizer hands it over,
   the drain waits for it before the Bigarray may go; nothing is lost, nothing crashes. *)
let test_dropped_writer dev () =
  with_device dev (fun d ->
      let base = (G.Device.memory_stats d).in_use in
      let start () =
        let a = G.Tensor.of_array d [| 128; 128 |] (Array.make (128 * 128) 0.5) in
        let c = G.Tensor.create d [| 128; 128 |] and cb = G.Cmdbuf.create d in
        for _ = 1 to 8 do
          G.matmul cb a a ~out:c
        done;
        G.copy_to_host cb c ~out:(host (128 * 128) 0.0);
        G.Cmdbuf.commit cb
      in
      start ();
      for _ = 1 to 3 do
        Gc.full_major ();
        G.collect ()
      done;
      Alcotest.(check int) "memory back once collected" base (G.Device.memory_stats d).in_use;
      (* free of such a buffer waits for its work *)
      let c = G.Tensor.create d [| 4 |] and dst = host 4 0.0 and cb = G.Cmdbuf.create d in
      G.fill cb ~out:c 9.0;
      G.copy_to_host cb c ~out:dst;
      G.Cmdbuf.commit cb;
      G.Cmdbuf.free cb;
      Alcotest.check floats "written before free returned" [ 9.; 9.; 9.; 9. ] (to_list dst))

let test_memory_limit dev () =
  with_device dev (fun d ->
      let default = (G.Device.memory_stats d).limit in
      Alcotest.(check bool) "a default limit" true (default > 0);
      let limit = (G.Device.memory_stats d).reserved + (1 lsl 20) in
      G.Device.set_memory_limit d limit;
      Alcotest.(check int) "the limit set" limit (G.Device.memory_stats d).limit;
      let small = G.Tensor.create d [| 1 lsl 16 |] (* 256 KiB: under it *) in
      expect_error ~status:G.Status.Out_of_memory ~msg:"limit" (fun () ->
          ignore (G.Tensor.create d [| 1 lsl 20 |]) (* 4 MiB *));
      Alcotest.(check bool) "reserved within the limit" true ((G.Device.memory_stats d).reserved <= limit);
      G.Device.set_memory_limit d 0;
      Alcotest.(check int) "0 restores the default" default (G.Device.memory_stats d).limit;
      let big = G.Tensor.create d [| 1 lsl 20 |] in
      G.Tensor.free big;
      G.Tensor.free small)

(* Out of memory, Tensor.create collects and tries again: that must also find the tensors
   that dropped command buffers kept (the collection that finalizes a buffer does not yet
   release what its root holds). A GC budget too large for the GC ever to start a cycle on
   its own: only the retry collects. Every step records into a buffer of its own, half of
   them with a copy to host memory, and drops it. *)
let test_oom_retry_dropped_buffers dev () =
  let d = G.Device.create ~backend:(G.Device.info (dev ())).backend ~gc_budget:(1 lsl 50) () in
  Fun.protect ~finally:(fun () -> G.Device.free d) (fun () ->
      G.Device.set_memory_limit d ((G.Device.memory_stats d).reserved + (4 lsl 20));
      for i = 1 to 24 do
        let t = G.Tensor.create d [| 1 lsl 18 |] (* 1 MiB *) in
        let cb = G.Cmdbuf.create d in
        G.fill cb ~out:t (float i);
        (* a small copy: a big Bigarray would push the GC to collect on its own *)
        if i mod 2 = 0 then (
          let s = G.Tensor.view t [| 1 lsl 16; 4 |] in
          let first = G.Tensor.create d [| 4 |] in
          G.sum_axis cb s 0 ~out:first;
          G.copy_to_host cb first ~out:(host 4 0.0));
        G.Cmdbuf.commit cb;
        if i mod 4 <> 0 then G.Cmdbuf.wait cb
      done)

(* An asynchronous exception (here from a Gc.Memprof callback; Sys.Break from a signal
   handler is another) raised at the k-th allocation of a recording, for every k: either
   nothing was recorded, or what was recorded is kept. A recorded copy_to_host whose
   Bigarray the GC may free would have the replay write into freed host memory; a recorded
   op whose tensor the GC destroyed fails its commit. The Bigarray is watched through a
   weak pointer. On an OCaml without Memprof (5.0 to 5.2) there is nothing to check. *)
exception Injected

let with_exception_at k f =
  let count = ref 0 in
  let hit _ = incr count; if !count = k then raise Injected else None in
  let tracker = { Gc.Memprof.null_tracker with alloc_minor = hit; alloc_major = hit } in
  match ignore (Gc.Memprof.start ~sampling_rate:1.0 ~callstack_size:0 tracker) with
  | exception Failure _ -> `No_memprof
  | () ->
      let r = match f () with () -> `Completed | exception Injected -> `Interrupted in
      Gc.Memprof.stop ();
      r

let test_async_exception_while_recording dev () =
  with_device dev (fun d ->
      let t = G.Tensor.of_array d [| 4 |] [| 1.; 2.; 3.; 4. |] in
      let weak = Weak.create 1 in
      (* the Bigarray and the tensor are reachable from this function's frame only *)
      let attempt k =
        let cb = G.Cmdbuf.create d in
        let dst = host 4 0.0 in
        Weak.set weak 0 (Some dst);
        let r =
          with_exception_at k (fun () ->
              G.copy_to_host cb t ~out:dst;
              G.fill cb ~out:(G.Tensor.create d [| 4 |]) 1.0)
        in
        (cb, r)
      in
      let rec go k =
        match attempt k with
        | _, `No_memprof -> ()
        | cb, r ->
            Gc.full_major ();
            Gc.full_major ();
            if G.Cmdbuf.op_count cb >= 1 then
              Alcotest.(check bool)
                (Printf.sprintf "exception at allocation %d: the recorded copy's Bigarray is kept" k)
                true (Weak.check weak 0);
            (* commit would raise Invalid_handle for a recorded tensor the GC destroyed *)
            G.Cmdbuf.run cb;
            G.Cmdbuf.free cb;
            if r = `Interrupted then go (k + 1)
      in
      go 1;
      ignore (Sys.opaque_identity t))

(* A recording that fails keeps nothing: its tensors go with the next collections. *)
let test_failed_recording_keeps_nothing dev () =
  with_device dev (fun d ->
      let cb = G.Cmdbuf.create d in
      let base = (G.Device.memory_stats d).in_use in
      let fail () =
        let big = G.Tensor.create d [| 1 lsl 18 |] in
        match G.add cb big (G.Tensor.create d [| 3 |]) ~out:big with
        | () -> Alcotest.fail "add of mismatched shapes was recorded"
        | exception G.Error (G.Status.Shape_mismatch, _) -> ()
      in
      fail ();
      Gc.full_major ();
      G.collect ();
      Alcotest.(check int) "memory back" base (G.Device.memory_stats d).in_use;
      Alcotest.(check int) "nothing recorded" 0 (G.Cmdbuf.op_count cb))

(* An op failure no wait has reported is reported by synchronize, once. *)
let test_synchronize_reports dev () =
  with_device dev (fun d ->
      let logits = G.Tensor.of_array d [| 1; 3 |] [| 0.; 1.; 2. |] in
      let labels = G.Tensor.of_array d [| 1 |] [| 5.0 |] and loss = G.Tensor.create d [| 1 |] in
      let cb = G.Cmdbuf.create d in
      G.softmax_cross_entropy cb logits labels ~out:loss;
      G.Cmdbuf.commit cb;
      expect_error ~status:G.Status.Invalid_argument
        ~msg:"neat_softmax_cross_entropy (op 0 of 1 in the command buffer)" (fun () ->
          G.Device.synchronize d);
      G.Device.synchronize d;
      G.Cmdbuf.free cb)

let tests (dev : unit -> G.Device.t) =
  let tc name f = Alcotest.test_case name `Quick f in
  [
    tc "copies: src refilled after commit, dst after wait" (test_refill dev);
    tc "copies: a failed op leaves dst untouched" (test_failed_op dev);
    tc "copies: the buffer keeps its Bigarrays alive" (test_kept_alive dev);
    tc "copies: a dropped buffer that writes host memory" (test_dropped_writer dev);
    tc "set_memory_limit: Out_of_memory past the limit" (test_memory_limit dev);
    tc "out of memory: the retry collects what dropped buffers kept" (test_oom_retry_dropped_buffers dev);
    tc "an asynchronous exception while recording" (test_async_exception_while_recording dev);
    tc "a failed recording keeps nothing" (test_failed_recording_keeps_nothing dev);
    tc "synchronize reports an op failure" (test_synchronize_reports dev);
  ]
