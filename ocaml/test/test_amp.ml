(* test_amp.ml — mixed precision through the bindings: the mixed optimizers against the
   float64 reference (a bf16 or f16 gradient, the half copy checked bit for bit as the
   float32 master rounded once), a step skipped by the scaler, and the loss-scale ops
   (scale, check over a list, update: growth at the interval and backoff), with their
   error statuses. The CPU and CUDA run these ops in every type; Metal runs them in float32
   and f16 and refuses bf16 (no bfloat16 in MPS's macOS 12 SDK), so there the tests' half
   type is f16 and a bf16 tensor is checked to be refused. *)

module G = Neatml.Gpu
module R = Reference

let rng = Random.State.make [| 4321 |]
let r32 x = Int32.float_of_bits (Int32.bits_of_float x)
let rand n = Array.init n (fun _ -> r32 (Random.State.float rng 2.0 -. 1.0))
let u16 n = Bigarray.Genarray.create Bigarray.int16_unsigned Bigarray.c_layout [| n |]
let bits_of a = Array.init (Bigarray.Genarray.nth_dim a 0) (fun i -> Bigarray.Genarray.get a [| i |])

let raw t =
  let b = u16 (G.Tensor.numel t) in
  G.Tensor.read_raw t b;
  bits_of b

(* A float32 value's bf16 bits, rounded to nearest, ties to even (finite values). *)
let bf16_bits x =
  let b = Int32.to_int (Int32.bits_of_float x) land 0xffffffff in
  ((b + 0x7fff + ((b lsr 16) land 1)) lsr 16) land 0xffff

let typed d dt shape data =
  let t = G.Tensor.create ~dtype:dt d shape in
  G.Tensor.write_array t data;
  t

let run d f =
  let cb = G.Cmdbuf.create d in
  f cb;
  G.Cmdbuf.run cb;
  cb

(* As test_gpu.ml's: |got - expected| <= tol (1 + |expected|), NaN never passes. *)
let check_close ?(tol = 1e-4) name expected got =
  Alcotest.(check int) (name ^ ": element count") (Array.length expected) (Array.length got);
  Array.iteri
    (fun i e ->
      if not (Float.abs (got.(i) -. e) <= tol *. (1.0 +. Float.abs e)) then
        Alcotest.failf "%s: element %d is %.9g, reference %.9g" name i got.(i) e)
    expected

let exact name expected got = Alcotest.(check (array (float 0.0))) name expected got

let expect_error name status f =
  match f () with
  | () -> Alcotest.failf "%s: no error" name
  | exception G.Error (s, msg) ->
      if s <> status then
        Alcotest.failf "%s: %s (%s), expected %s" name (G.Status.to_string s) msg
          (G.Status.to_string status)

let on_metal d = (G.Device.info d).backend = G.Backend.Metal

(* The half type the tests use: bf16, but f16 on Metal (which refuses bf16). *)
let half d = if on_metal d then G.Dtype.F16 else G.Dtype.Bf16

(* The bits of the values rounded to dt: bf16_bits, or the host's rounding (Tensor.write,
   checked by test_dtype.ml) for f16. *)
let rounded_bits d dt vals =
  if dt = G.Dtype.Bf16 then Array.map bf16_bits vals
  else raw (typed d dt [| Array.length vals |] vals)

(* Two replays of a recorded mixed SGD step with a bf16 (Metal: f16) gradient scaled by 1024
   (a power of two: the division is exact), the learning rate changed in hyper between them.
   The reference takes the gradient as the half tensor holds it, divided by the scale. *)
let test_sgd_mixed dev () =
  let d = dev () in
  let n = 33 and scale = 1024.0 in
  let p0 = rand n and g = rand n in
  let momentum = 0.9 and wd = 0.01 in
  let master = G.Tensor.of_array d [| n |] p0 and velocity = G.Tensor.zeros d [| n |] in
  let grad = typed d (half d) [| n |] (Array.map (( *. ) scale) g) in
  let param = G.Tensor.create ~dtype:(half d) d [| n |] in
  let scaler = G.Loss_scale.create ~scale d in
  let hyper = G.Tensor.of_array d [| 2 |] [| 0.1; 1.0 |] in
  let cb = G.Cmdbuf.create d in
  G.sgd_update_mixed cb ~momentum ~weight_decay:wd ~velocity ~scaler ~param hyper master grad;
  G.Cmdbuf.run cb;
  G.Tensor.write_array hyper [| 0.05; 2.0 |];
  G.Cmdbuf.run cb;
  let gr = Array.map (fun x -> x /. scale) (G.Tensor.to_array grad) in
  let p1, v1 = R.sgd ~lr:0.1 ~momentum ~wd ~nesterov:false p0 gr (Array.make n 0.0) in
  let p2, v2 = R.sgd ~lr:0.05 ~momentum ~wd ~nesterov:false (Array.map r32 p1) gr (Array.map r32 v1) in
  let m = G.Tensor.to_array master in
  check_close "sgd master" p2 m;
  check_close "sgd velocity" v2 (G.Tensor.to_array velocity);
  Alcotest.(check (array int)) "param = master rounded" (rounded_bits d (half d) m) (raw param);
  (* found_inf set: the replayed step writes nothing *)
  let v = G.Tensor.to_array velocity and pb = raw param in
  G.Tensor.write_array scaler [| scale; 1.0; 0.0 |];
  G.Tensor.write_array hyper [| 0.5; 3.0 |];
  G.Cmdbuf.run cb;
  exact "skipped: master" m (G.Tensor.to_array master);
  exact "skipped: velocity" v (G.Tensor.to_array velocity);
  Alcotest.(check (array int)) "skipped: param" pb (raw param);
  exact "skipped: scaler untouched" [| scale; 1.0; 0.0 |] (G.Tensor.to_array scaler);
  (* without scaler and param, from a float32 gradient: sgd_update's very bits *)
  let a = G.Tensor.of_array d [| n |] p0 and b = G.Tensor.of_array d [| n |] p0 in
  let va = G.Tensor.zeros d [| n |] and vb = G.Tensor.zeros d [| n |] in
  let g32 = G.Tensor.of_array d [| n |] g in
  ignore
    (run d (fun cb ->
         G.sgd_update cb ~momentum ~nesterov:true ~velocity:va hyper a g32;
         G.sgd_update_mixed cb ~momentum ~nesterov:true ~velocity:vb hyper b g32));
  exact "as sgd_update: param" (G.Tensor.to_array a) (G.Tensor.to_array b);
  exact "as sgd_update: velocity" (G.Tensor.to_array va) (G.Tensor.to_array vb)

(* Mixed AdamW over two steps from an f16 gradient scaled by 256, an f16 copy written: its
   bits must be the host's rounding of the master (Tensor.write into an f16 tensor). *)
let test_adam_mixed dev () =
  let d = dev () in
  let n = 29 and scale = 256.0 in
  let p0 = rand n and g = rand n in
  let b1 = 0.9 and b2 = 0.999 and eps = 1e-8 and wd = 0.01 in
  let master = G.Tensor.of_array d [| n |] p0 in
  let m = G.Tensor.zeros d [| n |] and v = G.Tensor.zeros d [| n |] in
  let grad = typed d G.Dtype.F16 [| n |] (Array.map (( *. ) scale) g) in
  let param = G.Tensor.create ~dtype:G.Dtype.F16 d [| n |] in
  let scaler = G.Loss_scale.create ~scale d in
  let hyper = G.Tensor.of_array d [| 2 |] [| 0.01; 1.0 |] in
  let cb = G.Cmdbuf.create d in
  G.adam_update_mixed cb ~beta1:b1 ~beta2:b2 ~eps ~weight_decay:wd ~scaler ~param hyper master
    grad ~m ~v;
  G.Cmdbuf.run cb;
  G.Tensor.write_array hyper [| 0.01; 2.0 |];
  G.Cmdbuf.run cb;
  let gr = Array.map (fun x -> x /. scale) (G.Tensor.to_array grad) in
  let r32a = Array.map r32 in
  let z = Array.make n 0.0 in
  let p1, m1, v1 = R.adam ~lr:0.01 ~t:1.0 ~b1 ~b2 ~eps ~wd p0 gr z z in
  let p2, m2, v2 = R.adam ~lr:0.01 ~t:2.0 ~b1 ~b2 ~eps ~wd (r32a p1) gr (r32a m1) (r32a v1) in
  let mw = G.Tensor.to_array master in
  check_close "adam master" p2 mw;
  check_close "adam m" m2 (G.Tensor.to_array m);
  check_close "adam v" v2 (G.Tensor.to_array v);
  let host = typed d G.Dtype.F16 [| n |] mw in
  Alcotest.(check (array int)) "param = master rounded to f16" (raw host) (raw param);
  (* skipped *)
  let mm = G.Tensor.to_array m and pb = raw param in
  G.Tensor.write_array scaler [| scale; 1.0; 0.0 |];
  G.Tensor.write_array hyper [| 0.01; 3.0 |];
  G.Cmdbuf.run cb;
  exact "skipped: master" mw (G.Tensor.to_array master);
  exact "skipped: m" mm (G.Tensor.to_array m);
  Alcotest.(check (array int)) "skipped: param" pb (raw param);
  (* defaults, no scaler and no copy: a bf16 (Metal: f16) gradient at scale 1 *)
  let master = G.Tensor.of_array d [| n |] p0 in
  let m = G.Tensor.zeros d [| n |] and v = G.Tensor.zeros d [| n |] in
  let grad = typed d (half d) [| n |] g in
  ignore (run d (fun cb -> G.adam_update_mixed cb hyper master grad ~m ~v));
  let p3, _, _ =
    R.adam ~lr:0.01 ~t:3.0 ~b1:0.9 ~b2:0.999 ~eps:1e-8 ~wd:0.0 p0 (G.Tensor.to_array grad) z z
  in
  check_close "adam defaults, no scaler" p3 (G.Tensor.to_array master)

let test_scale dev () =
  let d = dev () in
  let x0 = [| 1.5; -0.25; 3.0; 0.0; -7.0 |] in
  let x = typed d (half d) [| 5 |] x0 and y = G.Tensor.create ~dtype:(half d) d [| 5 |] in
  let scaler = G.Loss_scale.create ~scale:8.0 d in
  let cb = run d (fun cb -> G.Loss_scale.scale cb scaler x ~out:y) in
  exact "x * 8" (Array.map (( *. ) 8.0) x0) (G.Tensor.to_array y);
  (* the scale is read when the op runs *)
  G.Tensor.write_array scaler [| 0.5; 0.0; 0.0 |];
  G.Cmdbuf.run cb;
  exact "x * 0.5 on replay" (Array.map (( *. ) 0.5) x0) (G.Tensor.to_array y);
  (* in place, float32, rounded once: 1/3 * 3 in float32 *)
  let third = r32 (1.0 /. 3.0) in
  let t = G.Tensor.of_array d [| 1 |] [| third |] in
  G.Tensor.write_array scaler [| 3.0; 0.0; 0.0 |];
  ignore (run d (fun cb -> G.Loss_scale.scale cb scaler t ~out:t));
  exact "in place" [| r32 (third *. 3.0) |] (G.Tensor.to_array t)

(* One recorded check over a float32, a bf16 (Metal: f16) and an f16 tensor, replayed with
   none, a NaN and an infinity among them; found_inf is overwritten each time, the rest
   untouched. On Metal a list with a bf16 tensor is refused. *)
let test_check dev () =
  let d = dev () in
  let a = G.Tensor.of_array d [| 4 |] [| 1.0; -2.0; 3e38; 0.0 |] in
  let b = typed d (half d) [| 2; 3 |] [| 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 |] in
  let c = typed d G.Dtype.F16 [| 3 |] [| 65504.0; -65504.0; 0.5 |] in
  let scaler = G.Tensor.of_array d [| 3 |] [| 64.0; 1.0; 5.0 |] in
  let cb = run d (fun cb -> G.Loss_scale.check cb [ a; b; c ] scaler) in
  exact "none" [| 64.0; 0.0; 5.0 |] (G.Tensor.to_array scaler);
  G.Tensor.write_array b [| 1.0; 2.0; Float.nan; 4.0; 5.0; 6.0 |];
  G.Cmdbuf.run cb;
  exact "a NaN in b" [| 64.0; 1.0; 5.0 |] (G.Tensor.to_array scaler);
  G.Tensor.write_array b [| 1.0; 2.0; 3.0; 4.0; 5.0; 6.0 |];
  G.Cmdbuf.run cb;
  exact "none again" [| 64.0; 0.0; 5.0 |] (G.Tensor.to_array scaler);
  (* 0x7c00: +inf in f16 *)
  let src = u16 3 in
  Array.iteri (fun i v -> Bigarray.Genarray.set src [| i |] v) [| 0x3c00; 0x7c00; 0x3800 |];
  G.Tensor.write_raw c src;
  G.Cmdbuf.run cb;
  exact "an inf in f16" [| 64.0; 1.0; 5.0 |] (G.Tensor.to_array scaler);
  G.Tensor.write_array c [| 1.0; 2.0; 3.0 |];
  G.Tensor.write_array a [| 1.0; Float.neg_infinity; 0.0; 0.0 |];
  G.Cmdbuf.run cb;
  exact "-inf in f32" [| 64.0; 1.0; 5.0 |] (G.Tensor.to_array scaler);
  (* an empty list: 0 *)
  ignore (run d (fun cb -> G.Loss_scale.check cb [] scaler));
  exact "empty list" [| 64.0; 0.0; 5.0 |] (G.Tensor.to_array scaler);
  if on_metal d then
    let bf = G.Tensor.zeros ~dtype:G.Dtype.Bf16 d [| 3 |] in
    expect_error "Metal: a bf16 tensor in the list" G.Status.Unsupported (fun () ->
        ignore (run d (fun cb -> G.Loss_scale.check cb [ a; bf ] scaler)))

(* growth after [growth_interval] good steps, backoff after a bad one, the defaults *)
let test_update dev () =
  let d = dev () in
  let p = G.Loss_scale.default in
  Alcotest.(check (list (float 0.0))) "default factors" [ 2.0; 0.5 ] [ p.growth_factor; p.backoff_factor ];
  Alcotest.(check int) "default interval" 2000 p.growth_interval;
  let s = G.Loss_scale.create ~scale:4.0 d in
  exact "create" [| 4.0; 0.0; 0.0 |] (G.Tensor.to_array s);
  let params = { G.Loss_scale.growth_factor = 3.0; backoff_factor = 0.25; growth_interval = 3 } in
  let cb = run d (fun cb -> G.Loss_scale.update cb ~params s) in
  exact "good step 1" [| 4.0; 0.0; 1.0 |] (G.Tensor.to_array s);
  G.Cmdbuf.run cb;
  exact "good step 2" [| 4.0; 0.0; 2.0 |] (G.Tensor.to_array s);
  G.Cmdbuf.run cb;
  exact "growth at the interval" [| 12.0; 0.0; 0.0 |] (G.Tensor.to_array s);
  G.Tensor.write_array s [| 12.0; 1.0; 2.0 |];
  G.Cmdbuf.run cb;
  exact "backoff, found_inf kept" [| 3.0; 1.0; 0.0 |] (G.Tensor.to_array s);
  (* the defaults: growth by 2 at the 2000th good step *)
  let s = G.Loss_scale.create d in
  G.Tensor.write_array s [| 65536.0; 0.0; 1998.0 |];
  let cb = run d (fun cb -> G.Loss_scale.update cb s) in
  exact "default: step 1999" [| 65536.0; 0.0; 1999.0 |] (G.Tensor.to_array s);
  G.Cmdbuf.run cb;
  exact "default: growth" [| 131072.0; 0.0; 0.0 |] (G.Tensor.to_array s);
  G.Tensor.write_array s [| 131072.0; 1.0; 7.0 |];
  G.Cmdbuf.run cb;
  exact "default: backoff" [| 65536.0; 1.0; 0.0 |] (G.Tensor.to_array s)

(* Recording errors: the right status, a message naming the call, nothing recorded. *)
let test_errors dev () =
  let d = dev () in
  let n = 6 in
  let f32 () = G.Tensor.zeros d [| n |] and bf () = G.Tensor.zeros ~dtype:G.Dtype.Bf16 d [| n |] in
  let hyper = G.Tensor.of_array d [| 2 |] [| 0.1; 1.0 |] and scaler = G.Loss_scale.create d in
  let cb = G.Cmdbuf.create d in
  let fails name status needle f =
    match f cb with
    | () -> Alcotest.failf "%s: no error" name
    | exception G.Error (s, msg) ->
        if s <> status then
          Alcotest.failf "%s: %s (%s), expected %s" name (G.Status.to_string s) msg
            (G.Status.to_string status);
        if not (Astring_like.contains msg needle) then
          Alcotest.failf "%s: message %S does not mention %S" name msg needle
  in
  fails "bf16 master" G.Status.Dtype_mismatch "master" (fun cb ->
      G.sgd_update_mixed cb hyper (bf ()) (bf ()) ~param:(bf ()));
  fails "bf16 adam moment" G.Status.Dtype_mismatch "neat_adam_update_mixed" (fun cb ->
      G.adam_update_mixed cb hyper (f32 ()) (bf ()) ~m:(bf ()) ~v:(f32 ()));
  fails "scaler of 2 elements" G.Status.Shape_mismatch "scaler" (fun cb ->
      G.sgd_update_mixed cb ~scaler:(G.Tensor.zeros d [| 2 |]) hyper (f32 ()) (bf ()));
  fails "bf16 scaler" G.Status.Dtype_mismatch "scaler" (fun cb ->
      G.adam_update_mixed cb ~scaler:(G.Tensor.zeros ~dtype:G.Dtype.Bf16 d [| 3 |]) hyper
        (f32 ()) (bf ()) ~m:(f32 ()) ~v:(f32 ()));
  fails "param of another shape" G.Status.Shape_mismatch "neat_sgd_update_mixed" (fun cb ->
      G.sgd_update_mixed cb ~param:(G.Tensor.zeros ~dtype:G.Dtype.Bf16 d [| n + 1 |]) hyper
        (f32 ()) (bf ()));
  fails "momentum without velocity" G.Status.Invalid_argument "velocity" (fun cb ->
      G.sgd_update_mixed cb ~momentum:0.9 hyper (f32 ()) (bf ()));
  fails "scale of mixed types" G.Status.Dtype_mismatch "neat_loss_scale" (fun cb ->
      G.Loss_scale.scale cb scaler (bf ()) ~out:(f32 ()));
  fails "scale with a 4-element scaler" G.Status.Shape_mismatch "scaler" (fun cb ->
      G.Loss_scale.scale cb (G.Tensor.zeros d [| 4 |]) (f32 ()) ~out:(f32 ()));
  fails "check: scaler in the list" G.Status.Invalid_argument "scaler" (fun cb ->
      G.Loss_scale.check cb [ bf (); scaler ] scaler);
  let t = G.Tensor.zeros ~dtype:(half d) d [| n |] in
  fails "check: 4097 tensors" G.Status.Invalid_argument "neat_loss_scale_check" (fun cb ->
      G.Loss_scale.check cb (List.init 4097 (fun _ -> t)) scaler);
  let gone = bf () in
  G.Tensor.free gone;
  fails "check: a freed tensor" G.Status.Invalid_handle "" (fun cb ->
      G.Loss_scale.check cb [ t; gone ] scaler);
  let upd name params =
    fails name G.Status.Invalid_argument "neat_loss_scale_update" (fun cb ->
        G.Loss_scale.update cb ~params scaler)
  in
  let p = G.Loss_scale.default in
  upd "growth below 1" { p with growth_factor = 0.5 };
  upd "backoff 0" { p with backoff_factor = 0.0 };
  upd "backoff above 1" { p with backoff_factor = 1.5 };
  upd "interval 0" { p with growth_interval = 0 };
  upd "interval past a C int" { p with growth_interval = 1 lsl 40 };
  Alcotest.(check int) "nothing recorded" 0 (G.Cmdbuf.op_count cb);
  exact "scaler untouched" [| 65536.0; 0.0; 0.0 |] (G.Tensor.to_array scaler);
  (* 4096 is the most: recorded *)
  G.Loss_scale.check cb (List.init 4096 (fun _ -> t)) scaler;
  Alcotest.(check int) "4096 tensors recorded" 1 (G.Cmdbuf.op_count cb)

let tests (dev : unit -> G.Device.t) =
  let tc name f = Alcotest.test_case name `Quick f in
  [
    tc "sgd_update_mixed: bf16 gradient and copy, scaler, skipped step" (test_sgd_mixed dev);
    tc "adam_update_mixed: f16 gradient and copy, scaler, skipped step" (test_adam_mixed dev);
    tc "Loss_scale.scale" (test_scale dev);
    tc "Loss_scale.check: none, a NaN, an inf" (test_check dev);
    tc "Loss_scale.update: growth at the interval, backoff" (test_update dev);
    tc "recording errors" (test_errors dev);
  ]
