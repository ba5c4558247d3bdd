(* test_lifetime.ml — objects and memory: host copies, free, views, replays, what a command
   buffer keeps alive, memory statistics, and the GC releasing tensors never freed. *)

module G = Neatml.Gpu

let ba_of_array dims a =
  let b = Bigarray.Genarray.create Bigarray.float32 Bigarray.c_layout dims in
  let flat = Bigarray.reshape_1 b (Array.length a) in
  Array.iteri (fun i v -> Bigarray.Array1.set flat i v) a;
  b

let floats n = Array.init n (fun i -> float ((i * 7) mod 13) -. 6.0)

let tests (dev : unit -> G.Device.t) =
  let tc name f = Alcotest.test_case name `Quick f in
  let run f =
    let cb = G.Cmdbuf.create (dev ()) in
    f cb;
    G.Cmdbuf.run cb
  in
  [
    tc "version and device info" (fun () ->
        let major, minor, _ = G.version () in
        Alcotest.(check (pair int int)) "major.minor" (0, 2) (major, minor);
        let info = G.Device.info (dev ()) in
        Alcotest.(check bool) "backend is resolved" true (info.backend <> G.Backend.Auto);
        Alcotest.(check int) "default GC budget: a quarter of the memory" (info.total_memory / 4)
          (G.Device.gc_budget (dev ()));
        let explicit = G.Device.create ~backend:info.backend () in
        Alcotest.(check string) "no selection note when the backend is named" ""
          (G.Device.info explicit).selection;
        G.Device.free explicit;
        Alcotest.(check bool) "has a name" true (String.length info.name > 0);
        Alcotest.(check bool) "has memory" true (info.total_memory > 0);
        Alcotest.(check bool) "has threads" true (info.num_threads > 0));
    tc "Bigarray round trip, 0 to 4 dimensions" (fun () ->
        List.iter
          (fun dims ->
            let n = Array.fold_left ( * ) 1 dims in
            let b = ba_of_array dims (floats n) in
            let t = G.Tensor.of_bigarray (dev ()) b in
            Alcotest.(check (array int)) "shape" dims (G.Tensor.shape t);
            Alcotest.(check int) "numel" n (G.Tensor.numel t);
            let back = G.Tensor.to_bigarray t in
            Alcotest.(check (array int)) "dims back" dims (Bigarray.Genarray.dims back);
            Alcotest.(check bool) "data back" true (back = b))
          [ [||]; [| 5 |]; [| 2; 3 |]; [| 2; 3; 4 |]; [| 2; 1; 3; 2 |]; [| 0; 4 |] ]);
    tc "write and read are flat copies" (fun () ->
        let t = G.Tensor.create (dev ()) [| 2; 3 |] in
        G.Tensor.write t (ba_of_array [| 6 |] (floats 6));
        let b = Bigarray.Genarray.create Bigarray.float32 Bigarray.c_layout [| 3; 2 |] in
        G.Tensor.read t b;
        Alcotest.(check bool) "same elements" true (b = ba_of_array [| 3; 2 |] (floats 6)));
    tc "free is idempotent" (fun () ->
        let t = G.Tensor.create (dev ()) [| 4 |] and cb = G.Cmdbuf.create (dev ()) in
        G.Tensor.free t;
        G.Tensor.free t;
        G.Cmdbuf.free cb;
        G.Cmdbuf.free cb;
        let d = G.Device.create () in
        G.Device.free d;
        G.Device.free d;
        match G.Tensor.numel t with
        | _ -> Alcotest.fail "a freed tensor answered"
        | exception G.Error (G.Status.Invalid_handle, _) -> ());
    tc "a view shares memory and outlives its parent" (fun () ->
        let parent = G.Tensor.of_array (dev ()) [| 2; 3; 2; 2 |] (floats 24) in
        let v = G.Tensor.view parent [| 2; 12 |] in
        Alcotest.(check (array int)) "view shape" [| 2; 12 |] (G.Tensor.shape v);
        run (fun cb -> G.scale cb v 2.0 ~out:v);
        Alcotest.(check (array (float 0.0))) "parent sees the view's write"
          (Array.map (fun x -> 2.0 *. x) (floats 24)) (G.Tensor.to_array parent);
        G.Tensor.free parent;
        Alcotest.(check (array (float 0.0))) "view after parent freed"
          (Array.map (fun x -> 2.0 *. x) (floats 24)) (G.Tensor.to_array v));
    tc "a replay reads the current contents" (fun () ->
        let x = G.Tensor.of_array (dev ()) [| 3 |] [| 1.; 2.; 3. |] and y = G.Tensor.create (dev ()) [| 1 |] in
        let cb = G.Cmdbuf.create (dev ()) in
        G.sum_all cb x ~out:y;
        Alcotest.(check int) "one op recorded" 1 (G.Cmdbuf.op_count cb);
        G.Cmdbuf.run cb;
        Alcotest.(check (array (float 0.0))) "first" [| 6.0 |] (G.Tensor.to_array y);
        G.Tensor.write_array x [| 10.; 20.; 30. |];
        G.Cmdbuf.run cb;
        Alcotest.(check (array (float 0.0))) "replay" [| 60.0 |] (G.Tensor.to_array y);
        Alcotest.(check bool) "device time of the replay is positive" true (G.Cmdbuf.device_time cb > 0.0);
        G.Cmdbuf.reset cb;
        (match G.Cmdbuf.device_time cb with
         | _ -> Alcotest.fail "device_time after reset should raise"
         | exception G.Error (G.Status.Invalid_argument, msg) ->
             Alcotest.(check bool) "message says why" true (String.length msg > 0));
        Alcotest.(check int) "reset drops the ops" 0 (G.Cmdbuf.op_count cb);
        (* a reset buffer records again *)
        G.scale cb x 0.5 ~out:x;
        G.Cmdbuf.run cb;
        Alcotest.(check (array (float 0.0))) "after reset" [| 5.; 10.; 15. |] (G.Tensor.to_array x));
    tc "a command buffer keeps its tensors alive" (fun () ->
        (* The tensors are reachable only through the buffer: without its list the GC would
           destroy them and the commit would answer Invalid_handle. *)
        let out = G.Tensor.create (dev ()) [| 2; 2 |] in
        let cb = G.Cmdbuf.create (dev ()) in
        let record () =
          let a = G.Tensor.of_array (dev ()) [| 2; 3 |] [| 1.; 2.; 3.; 4.; 5.; 6. |] in
          let b = G.Tensor.of_array (dev ()) [| 3; 2 |] [| 1.; 0.; 0.; 1.; 1.; 1. |] in
          G.matmul cb a b ~out
        in
        record ();
        Gc.full_major ();
        Gc.full_major ();
        G.Cmdbuf.run cb;
        Alcotest.(check (array (float 0.0))) "result" [| 4.; 5.; 10.; 11. |] (G.Tensor.to_array out));
    tc "memory statistics, trim" (fun () ->
        let d = dev () in
        G.Device.synchronize d;
        let s0 = G.Device.memory_stats d in
        let bytes = 1 lsl 22 in
        let t = G.Tensor.create d [| bytes / 4 |] in
        let s1 = G.Device.memory_stats d in
        Alcotest.(check bool) "in_use grows by the tensor" true (s1.in_use - s0.in_use >= bytes);
        Alcotest.(check bool) "peak covers it" true (s1.peak >= s1.in_use);
        G.Tensor.free t;
        let s2 = G.Device.memory_stats d in
        Alcotest.(check int) "in_use back" s0.in_use s2.in_use;
        Alcotest.(check bool) "freed memory stays cached" true (s2.reserved >= s0.in_use + bytes);
        G.Device.trim d;
        let s3 = G.Device.memory_stats d in
        Alcotest.(check bool) "trim gives the cache back" true (s3.reserved <= s2.reserved - bytes);
        G.Device.reset_peak d;
        Alcotest.(check int) "reset_peak" s3.in_use (G.Device.memory_stats d).peak);
    tc "math mode" (fun () ->
        let d = G.Device.create ~backend:(G.Device.info (dev ())).backend () in
        Alcotest.(check bool) "strict by default" true ((G.Device.info d).math_mode = G.Strict);
        G.Device.set_math_mode d G.Tf32;
        Alcotest.(check bool) "tf32 set" true ((G.Device.info d).math_mode = G.Tf32);
        G.Device.free d);
    tc "GC releases 100,000 tensors never freed" (fun () ->
        (* Each tensor counts its 16 KiB against the device's GC budget, here 32 MiB: the GC
           collects every ~2,000 tensors, their finalizers hand them over, and the next
           create gives their memory back. Gc.full_major then collect give every byte back.
           Without the count (a plain custom block), only the minor collections that other
           allocations bring would free them, every ~25,000 tensors: ~400 MB live. *)
        let d = G.Device.create ~backend:(G.Device.info (dev ())).backend ~gc_budget:(32 lsl 20) () in
        Alcotest.(check int) "the budget given" (32 lsl 20) (G.Device.gc_budget d);
        let start = (G.Device.memory_stats d).in_use in
        for i = 1 to 100_000 do
          let t = G.Tensor.create d [| 4096 |] in
          if i mod 10_000 = 0 then ignore (G.Tensor.numel t)
        done;
        let peak = (G.Device.memory_stats d).peak - start in
        Gc.full_major ();
        G.collect ();
        let after = (G.Device.memory_stats d).in_use in
        Printf.printf "GC stress: in_use start %d, peak above start %d, after full_major %d\n" start peak after;
        Alcotest.(check int) "in_use back to start" start after;
        Alcotest.(check bool) "the GC collected while allocating" true (peak < 64 * 1024 * 1024);
        G.Device.free d);
  ]
  (* Linux only: threads are counted in /proc; elsewhere the case is left out, and says so. *)
  @
  if not (Sys.file_exists "/proc/self/task") then (
    print_endline "test_lifetime: no /proc/self/task: the dropped devices case not run";
    [])
  else
    [
      tc "GC releases CPU devices never freed" (fun () ->
          (* A CPU device owns a worker thread. Each device block counts as an eighth of a
             major cycle, so a loop that drops 300 devices without free leaves a few dozen
             at most waiting for the GC, against the 300 that only the minor collections of
             other allocations would find. *)
          let threads () = Array.length (Sys.readdir "/proc/self/task") in
          let before = threads () in
          for _ = 1 to 300 do
            ignore (G.Device.create ~backend:G.Backend.Cpu ())
          done;
          let during = threads () in
          Gc.full_major ();
          G.collect ();
          let after = threads () in
          Printf.printf "dropped devices: threads before %d, after the loop %d, after collect %d\n"
            before during after;
          Alcotest.(check bool) "at most 64 devices' threads live in the loop" true (during - before <= 64);
          Alcotest.(check bool) "every worker gone after collect" true (after <= before));
    ]
