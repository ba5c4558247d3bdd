(* test_threads.ml — Cmdbuf.wait releases the OCaml runtime lock: another OCaml thread makes
   progress while the main thread waits for a long command buffer. If the stub kept the
   lock, the counter could not move between the two reads around [wait]. And the GC may
   finalize a device's tensors on one thread while another frees that device. *)

module G = Neatml.Gpu

let tests (dev : unit -> G.Device.t) =
  [
    Alcotest.test_case "wait lets other OCaml threads run" `Quick (fun () ->
        let d = dev () in
        let n = 384 in
        let a = G.Tensor.of_array d [| n; n |] (Array.init (n * n) (fun i -> float (i mod 7) /. 7.0)) in
        let c = G.Tensor.create d [| n; n |] in
        let cb = G.Cmdbuf.create d in
        (* ~0.1 s of work or more on a CPU; commit returns at once *)
        for _ = 1 to 40 do
          G.matmul cb a a ~out:c
        done;
        let counter = Atomic.make 0 and stop = Atomic.make false in
        let spinner =
          Thread.create
            (fun () ->
              while not (Atomic.get stop) do
                Atomic.incr counter;
                Thread.yield ()
              done)
            ()
        in
        let progressed = ref false in
        (* A few tries: on a very fast device the work may end before the spinner is
           scheduled; a stub that keeps the lock never progresses, whatever the tries. *)
        for _ = 1 to 5 do
          if not !progressed then begin
            G.Cmdbuf.commit cb;
            let before = Atomic.get counter in
            G.Cmdbuf.wait cb;
            if Atomic.get counter > before then progressed := true
          end
        done;
        Atomic.set stop true;
        Thread.join spinner;
        Alcotest.(check bool) "the other thread ran during wait" true !progressed);
    Alcotest.test_case "finalizers while another thread frees the device" `Quick (fun () ->
        (* The library forbids any call on a device's objects during its destroy: the
           finalizers that run meanwhile (here on the collecting thread) must defer, not
           destroy. A crash or a hang is the failure. *)
        let backend = (G.Device.info (dev ())).backend in
        let stop = Atomic.make false in
        let collector =
          Thread.create
            (fun () ->
              while not (Atomic.get stop) do
                Gc.full_major ();
                Thread.yield ()
              done)
            ()
        in
        for _ = 1 to 20 do
          let d = G.Device.create ~backend () in
          let cb = G.Cmdbuf.create d in
          let a = G.Tensor.of_array d [| 64; 64 |] (Array.make 4096 0.5) in
          for _ = 1 to 4 do
            G.matmul cb a a ~out:(G.Tensor.create d [| 64; 64 |])
          done;
          G.Cmdbuf.commit cb;
          for _ = 1 to 200 do
            ignore (Sys.opaque_identity (G.Tensor.create d [| 256 |]))
          done;
          G.Device.free d
        done;
        Atomic.set stop true;
        Thread.join collector;
        G.collect ());
  ]
