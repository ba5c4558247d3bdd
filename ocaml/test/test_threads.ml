(* test_threads.ml — Cmdbuf.wait releases the OCaml runtime lock: another OCaml thread makes
   progress while the main thread waits for a long command buffer. If the stub kept the
   lock, the counter could not move between the two reads around [wait]. *)

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
  ]
