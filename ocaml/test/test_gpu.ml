(* test_gpu.ml — Neatml.Gpu against the float64 reference (reference.ml), error statuses,
   object lifetimes and the GC's view of device memory. Runs on the device that
   Device.create () picks (NEATML_BACKEND=cpu|cuda chooses). Inputs are random float32
   values from a fixed seed, printed at start; outputs are poisoned with NaN before a run. *)

module G = Neatml.Gpu
module R = Reference

let seed = try int_of_string (Sys.getenv "NEATML_TEST_SEED") with Not_found | Failure _ -> 1234
let rng = Random.State.make [| seed |]
let dev = lazy (G.Device.create ())
let dev () = Lazy.force dev

(* Round to the nearest float32: inputs are exact in both the library and the reference. *)
let r32 x = Int32.float_of_bits (Int32.bits_of_float x)
let rand n = Array.init n (fun _ -> r32 (Random.State.float rng 2.0 -. 1.0))
let prod = Array.fold_left ( * ) 1
let tensor shape data = G.Tensor.of_array (dev ()) shape data
let poisoned shape = tensor shape (Array.make (prod shape) Float.nan)

let run f =
  let cb = G.Cmdbuf.create (dev ()) in
  f cb;
  G.Cmdbuf.run cb;
  G.Cmdbuf.free cb

(* |got - expected| <= tol (1 + |expected|) everywhere, NaN never passes. The float32 error
   of the sums of at most a few hundred terms of size <= 1 tested here stays below 1e-5
   relative; 1e-4 leaves margin for the order of summation, not for a wrong result. *)
let check_close ?(tol = 1e-4) name expected got =
  Alcotest.(check int) (name ^ ": element count") (Array.length expected) (Array.length got);
  Array.iteri
    (fun i e ->
      let g = got.(i) in
      if not (Float.abs (g -. e) <= tol *. (1.0 +. Float.abs e)) then
        Alcotest.failf "%s: element %d is %.9g, reference %.9g (seed %d)" name i g e seed)
    expected

(* For ops whose float32 result is the correctly rounded exact one (max, a*b, a+b, copies). *)
let check_exact name expected got = check_close ~tol:0.0 name (Array.map r32 expected) got

(* ---- forward ops ---- *)

let test_matmul ~ta ~tb ~alpha ~beta () =
  let m, n, k = (5, 7, 11) in
  let a = rand (m * k) and b = rand (k * n) and c0 = rand (m * n) in
  let ta_ = tensor (if ta then [| k; m |] else [| m; k |]) a in
  let tb_ = tensor (if tb then [| n; k |] else [| k; n |]) b in
  (* beta = 0 must not read c: a NaN there must not show up in the result. *)
  let c = tensor [| m; n |] (if beta = 0.0 then Array.make (m * n) Float.nan else c0) in
  run (fun cb -> G.matmul cb ~alpha ~beta ~trans_a:ta ~trans_b:tb ta_ tb_ ~out:c);
  check_close "matmul" (R.matmul ~m ~n ~k ~alpha ~beta ~ta ~tb a b c0) (G.Tensor.to_array c)

let test_matmul_batched () =
  let bs, m, n, k = (3, 4, 6, 5) in
  let a = rand (bs * k * m) and b = rand (bs * k * n) and c0 = rand (bs * m * n) in
  let c = tensor [| bs; m; n |] c0 in
  run (fun cb ->
      G.matmul_batched cb ~alpha:2.0 ~beta:0.5 ~trans_a:true (tensor [| bs; k; m |] a)
        (tensor [| bs; k; n |] b) ~out:c);
  let expected =
    Array.concat
      (List.init bs (fun i ->
           R.matmul ~m ~n ~k ~alpha:2.0 ~beta:0.5 ~ta:true ~tb:false
             (Array.sub a (i * k * m) (k * m))
             (Array.sub b (i * k * n) (k * n))
             (Array.sub c0 (i * m * n) (m * n))))
  in
  check_close "matmul_batched" expected (G.Tensor.to_array c)

let test_add () =
  let a = rand 12 and b = rand 12 and row = rand 4 in
  let ta = tensor [| 3; 4 |] a in
  let out = poisoned [| 3; 4 |] and out_row = poisoned [| 3; 4 |] and out_row2 = poisoned [| 3; 4 |] in
  run (fun cb ->
      G.add cb ta (tensor [| 3; 4 |] b) ~out;
      G.add cb ta (tensor [| 4 |] row) ~out:out_row;
      G.add cb ta (tensor [| 1; 4 |] row) ~out:out_row2);
  check_exact "add" (Array.mapi (fun i x -> x +. b.(i)) a) (G.Tensor.to_array out);
  let with_row = Array.mapi (fun i x -> x +. row.(i mod 4)) a in
  check_exact "add row [n]" with_row (G.Tensor.to_array out_row);
  check_exact "add row [1,n]" with_row (G.Tensor.to_array out_row2);
  (* in place: out is a *)
  run (fun cb -> G.add cb ta ta ~out:ta);
  check_exact "add in place" (Array.map (fun x -> x +. x) a) (G.Tensor.to_array ta)

let test_mul () =
  let a = rand 12 and b = rand 12 and row = rand 4 in
  let ta = tensor [| 3; 4 |] a in
  let out = poisoned [| 3; 4 |] and out_row = poisoned [| 3; 4 |] in
  run (fun cb ->
      G.mul cb ta (tensor [| 3; 4 |] b) ~out;
      G.mul cb ta (tensor [| 4 |] row) ~out:out_row);
  check_exact "mul" (Array.mapi (fun i x -> x *. b.(i)) a) (G.Tensor.to_array out);
  check_exact "mul row [n]" (Array.mapi (fun i x -> x *. row.(i mod 4)) a) (G.Tensor.to_array out_row)

let test_scale_fill () =
  let x = rand 10 in
  let tx = tensor [| 2; 5 |] x and out = poisoned [| 2; 5 |] and f = poisoned [| 7 |] in
  run (fun cb ->
      G.scale cb tx 0.75 ~out;
      G.fill cb ~out:f 3.5;
      G.scale cb tx (-2.0) ~out:tx);
  check_exact "scale" (Array.map (fun v -> 0.75 *. v) x) (G.Tensor.to_array out);
  check_exact "scale in place" (Array.map (fun v -> -2.0 *. v) x) (G.Tensor.to_array tx);
  check_exact "fill" (Array.make 7 3.5) (G.Tensor.to_array f)

let acts = G.[ (Identity, "none"); (Relu, "relu"); (Sigmoid, "sigmoid"); (Tanh, "tanh"); (Gelu, "gelu") ]

let test_linear_forward act ~bias () =
  let n, inp, out = (6, 9, 5) in
  let x = rand (n * inp) and w = rand (out * inp) and b = rand out in
  let y = poisoned [| n; out |] in
  let bias = if bias then Some (tensor [| out |] b) else None in
  run (fun cb -> G.linear_forward cb ~act ?bias (tensor [| n; inp |] x) (tensor [| out; inp |] w) ~out:y);
  let b = if Option.is_some bias then Some b else None in
  check_close "linear_forward" (R.linear_forward ~n ~inp ~out ~act x w b) (G.Tensor.to_array y)

let conv_case ?(stride = 1) ?(pad = 0) ?(dilation = 1) ?(groups = 1) ~n ~c ~h ~w ~k ~kh ~kw () =
  R.{ n; c; h; w; k; kh; kw; sh = stride; sw = stride; ph = pad; pw = pad; dh = dilation; dw = dilation; g = groups }

let desc_of (cv : R.conv) =
  G.Conv2d.make ~stride_h:cv.sh ~stride_w:cv.sw ~pad_h:cv.ph ~pad_w:cv.pw ~dilation_h:cv.dh
    ~dilation_w:cv.dw ~groups:cv.g cv.kh cv.kw

let conv_tensors (cv : R.conv) =
  let x = rand (cv.n * cv.c * cv.h * cv.w) and wt = rand (cv.k * (cv.c / cv.g) * cv.kh * cv.kw) in
  let b = rand cv.k and p, q = R.conv_out cv in
  ( (x, wt, b),
    ( tensor [| cv.n; cv.c; cv.h; cv.w |] x,
      tensor [| cv.k; cv.c / cv.g; cv.kh; cv.kw |] wt,
      tensor [| cv.k |] b ),
    [| cv.n; cv.k; p; q |] )

let test_conv2d_forward cv act () =
  let (x, wt, b), (tx, tw, tb), yshape = conv_tensors cv in
  let y = poisoned yshape in
  run (fun cb -> G.conv2d_forward cb (desc_of cv) ~act ~bias:tb tx tw ~out:y);
  check_close "conv2d_forward" (R.conv_forward cv ~act x wt (Some b)) (G.Tensor.to_array y)

let pool_case ?stride ?(pad = 0) ~n ~c ~h ~w ~k () =
  let s = Option.value stride ~default:k in
  R.{ pn = n; pc = c; ph_ = h; pw_ = w; pkh = k; pkw = k; psh = s; psw = s; pph = pad; ppw = pad }

let pool_desc (pl : R.pool) =
  G.Pool2d.make ~stride_h:pl.psh ~stride_w:pl.psw ~pad_h:pl.pph ~pad_w:pl.ppw pl.pkh pl.pkw

let test_maxpool pl () =
  let x = rand (pl.R.pn * pl.pc * pl.ph_ * pl.pw_) and p, q = R.pool_out pl in
  let y = poisoned [| pl.pn; pl.pc; p; q |] in
  run (fun cb -> G.maxpool2d cb (pool_desc pl) (tensor [| pl.pn; pl.pc; pl.ph_; pl.pw_ |] x) ~out:y);
  check_exact "maxpool2d" (R.maxpool pl x) (G.Tensor.to_array y)

(* One row per call: what the maker was given, the record it must build (C field order). *)
let test_descriptors () =
  let conv name got ?(layout = G.NCHW) (kh, kw, sh, sw, ph, pw, dh, dw, g) =
    Alcotest.(check bool) name true
      (got = G.Conv2d.{ kernel_h = kh; kernel_w = kw; stride_h = sh; stride_w = sw; pad_h = ph; pad_w = pw;
                        dilation_h = dh; dilation_w = dw; groups = g; layout })
  in
  conv "conv defaults" (G.Conv2d.make 3 5) (3, 5, 1, 1, 0, 0, 1, 1, 1);
  conv "conv both axes" (G.Conv2d.make ~stride:2 ~pad:1 ~dilation:3 ~groups:4 3 3) (3, 3, 2, 2, 1, 1, 3, 3, 4);
  conv "conv per axis" (G.Conv2d.make ~stride:2 ~stride_w:3 ~pad_h:1 ~dilation_w:2 1 7) (1, 7, 2, 3, 1, 0, 1, 2, 1);
  conv "conv NHWC" (G.Conv2d.make ~groups:2 ~layout:G.NHWC 3 3) ~layout:G.NHWC (3, 3, 1, 1, 0, 0, 1, 1, 2);
  conv "conv NCHW given" (G.Conv2d.make ~layout:G.NCHW 2 2) (2, 2, 1, 1, 0, 0, 1, 1, 1);
  let pool name got ?(layout = G.NCHW) (kh, kw, sh, sw, ph, pw) =
    Alcotest.(check bool) name true
      (got = G.Pool2d.{ kernel_h = kh; kernel_w = kw; stride_h = sh; stride_w = sw; pad_h = ph; pad_w = pw; layout })
  in
  pool "pool defaults: stride = kernel" (G.Pool2d.make 2 3) (2, 3, 2, 3, 0, 0);
  pool "pool both axes" (G.Pool2d.make ~stride:1 ~pad:1 3 3) (3, 3, 1, 1, 1, 1);
  pool "pool per axis" (G.Pool2d.make ~stride_h:1 ~pad_w:1 2 3) (2, 3, 1, 3, 0, 1);
  pool "pool NHWC" (G.Pool2d.make ~pad:1 ~layout:G.NHWC 3 3) ~layout:G.NHWC (3, 3, 3, 3, 1, 1)

let test_sum () =
  let shape = [| 3; 4; 5 |] in
  let x = rand 60 in
  let tx = tensor shape x in
  let all = poisoned [| 1 |] and axes = List.init 3 (fun a -> poisoned (Array.of_list (List.filteri (fun i _ -> i <> a) (Array.to_list shape)))) in
  let v = rand 17 in
  let v_sum = poisoned [| 1 |] in
  run (fun cb ->
      G.sum_all cb tx ~out:all;
      List.iteri (fun a y -> G.sum_axis cb tx a ~out:y) axes;
      G.sum_axis cb (tensor [| 17 |] v) 0 ~out:v_sum);
  check_close "sum_all" [| Array.fold_left ( +. ) 0.0 x |] (G.Tensor.to_array all);
  List.iteri (fun a y -> check_close (Printf.sprintf "sum_axis %d" a) (R.sum_axis shape a x) (G.Tensor.to_array y)) axes;
  check_close "sum_axis of 1-D" [| Array.fold_left ( +. ) 0.0 v |] (G.Tensor.to_array v_sum)

let test_softmax () =
  let rows, cols = (4, 9) in
  (* large values: a softmax without the max subtracted overflows expf *)
  let x = Array.map (fun v -> r32 (v *. 100.0)) (rand (rows * cols)) in
  let tx = tensor [| rows; cols |] x and y = poisoned [| rows; cols |] in
  run (fun cb -> G.softmax cb tx ~out:y; G.softmax cb tx ~out:tx);
  check_close "softmax" (R.softmax ~rows ~cols x) (G.Tensor.to_array y);
  check_close "softmax in place" (R.softmax ~rows ~cols x) (G.Tensor.to_array tx)

(* ---- training ops ---- *)

let test_activation act () =
  let x = Array.map (fun v -> r32 (3.0 *. v)) (rand 24) and dy = rand 24 in
  let tx = tensor [| 4; 6 |] x and y = poisoned [| 4; 6 |] and dx = poisoned [| 4; 6 |] in
  run (fun cb ->
      G.activation_forward cb act tx ~out:y;
      G.activation_backward cb act ~x:tx ~y (tensor [| 4; 6 |] dy) ~dx);
  let ry = Array.map (R.act_forward act) x in
  check_close "activation_forward" ry (G.Tensor.to_array y);
  check_close "activation_backward"
    (Array.mapi (fun i g -> g *. R.act_grad act ~x:x.(i) ~y:ry.(i)) dy)
    (G.Tensor.to_array dx)

let test_linear_backward act () =
  let n, inp, out = (5, 8, 6) in
  let x = rand (n * inp) and w = rand (out * inp) and b = rand out and dy = rand (n * out) in
  let tx = tensor [| n; inp |] x and tw = tensor [| out; inp |] w and tb = tensor [| out |] b in
  let y = poisoned [| n; out |] in
  let dx = poisoned [| n; inp |] and dw = poisoned [| out; inp |] and db = poisoned [| out |] in
  run (fun cb ->
      G.linear_forward cb ~act ~bias:tb tx tw ~out:y;
      G.linear_backward cb ~act ~bias:tb ~y ~dx ~dw ~db tx tw (tensor [| n; out |] dy));
  let rdx, rdw, rdb = R.linear_backward ~n ~inp ~out ~act x w (Some b) dy in
  check_close "linear_backward dx" rdx (G.Tensor.to_array dx);
  check_close "linear_backward dw" rdw (G.Tensor.to_array dw);
  check_close "linear_backward db" rdb (G.Tensor.to_array db);
  (* accumulate adds the gradients to what the outputs hold; dx skipped (None) *)
  let dw0 = rand (out * inp) and db0 = rand out in
  G.Tensor.write_array dw dw0;
  G.Tensor.write_array db db0;
  run (fun cb -> G.linear_backward cb ~act ~bias:tb ~y ~dw ~db ~accumulate:true tx tw (tensor [| n; out |] dy));
  check_close "linear_backward accumulate dw" (Array.mapi (fun i v -> v +. dw0.(i)) rdw) (G.Tensor.to_array dw);
  check_close "linear_backward accumulate db" (Array.mapi (fun i v -> v +. db0.(i)) rdb) (G.Tensor.to_array db)

let test_conv2d_backward cv act () =
  let (x, wt, b), (tx, tw, tb), yshape = conv_tensors cv in
  let dy = rand (prod yshape) in
  let y = poisoned yshape and dx = poisoned [| cv.n; cv.c; cv.h; cv.w |] in
  let dw = poisoned [| cv.k; cv.c / cv.g; cv.kh; cv.kw |] and db = poisoned [| cv.k |] in
  let desc = desc_of cv in
  run (fun cb ->
      G.conv2d_forward cb desc ~act ~bias:tb tx tw ~out:y;
      G.conv2d_backward cb desc ~act ~bias:tb ~y ~dx ~dw ~db tx tw (tensor yshape dy));
  let rdx, rdw, rdb = R.conv_backward cv ~act x wt (Some b) dy in
  check_close "conv2d_backward dx" rdx (G.Tensor.to_array dx);
  check_close "conv2d_backward dw" rdw (G.Tensor.to_array dw);
  check_close "conv2d_backward db" rdb (G.Tensor.to_array db)

let test_maxpool_backward pl () =
  let x = rand (pl.R.pn * pl.pc * pl.ph_ * pl.pw_) and p, q = R.pool_out pl in
  let dy = rand (pl.pn * pl.pc * p * q) in
  let dx = poisoned [| pl.pn; pl.pc; pl.ph_; pl.pw_ |] in
  run (fun cb ->
      G.maxpool2d_backward cb (pool_desc pl) (tensor [| pl.pn; pl.pc; pl.ph_; pl.pw_ |] x)
        (tensor [| pl.pn; pl.pc; p; q |] dy) ~dx);
  (* overlapping windows add two float32s: correctly rounded only up to one rounding each *)
  check_close ~tol:1e-6 "maxpool2d_backward" (R.maxpool_backward pl x dy) (G.Tensor.to_array dx)

let test_softmax_backward () =
  let rows, cols = (3, 7) in
  let y = R.softmax ~rows ~cols (rand (rows * cols)) |> Array.map r32 and dy = rand (rows * cols) in
  let dx = poisoned [| rows; cols |] in
  run (fun cb -> G.softmax_backward cb (tensor [| rows; cols |] y) (tensor [| rows; cols |] dy) ~dx);
  check_close "softmax_backward" (R.softmax_backward ~rows ~cols y dy) (G.Tensor.to_array dx)

let test_cross_entropy () =
  let rows, cols = (8, 10) in
  let logits = Array.map (fun v -> r32 (4.0 *. v)) (rand (rows * cols)) in
  let labels = Array.init rows (fun _ -> float (Random.State.int rng cols)) in
  let tl = tensor [| rows; cols |] logits and tlab = tensor [| rows |] labels in
  let loss = poisoned [| 1 |] and dl = poisoned [| rows; cols |] in
  run (fun cb ->
      G.softmax_cross_entropy cb tl tlab ~out:loss;
      G.softmax_cross_entropy_backward cb tl tlab ~dlogits:dl);
  check_close "softmax_cross_entropy" [| R.cross_entropy ~rows ~cols logits labels |] (G.Tensor.to_array loss);
  check_close "softmax_cross_entropy_backward" (R.cross_entropy_backward ~rows ~cols logits labels)
    (G.Tensor.to_array dl)

(* Two replays of one recorded update with the learning rate changed in [hyper] between
   them: checks the op, the replay and that hyper is read at run time, not at recording. *)
let test_sgd ~nesterov () =
  let n = 33 in
  let p0 = rand n and g = rand n in
  let momentum = 0.9 and wd = 0.01 in
  let p = tensor [| n |] p0 and v = G.Tensor.zeros (dev ()) [| n |] in
  let hyper = tensor [| 2 |] [| 0.1; 1.0 |] in
  let cb = G.Cmdbuf.create (dev ()) in
  G.sgd_update cb ~momentum ~weight_decay:wd ~nesterov ~velocity:v hyper p (tensor [| n |] g);
  G.Cmdbuf.run cb;
  G.Tensor.write_array hyper [| 0.05; 2.0 |];
  G.Cmdbuf.run cb;
  let r32a = Array.map r32 in
  let p1, v1 = R.sgd ~lr:0.1 ~momentum ~wd ~nesterov p0 g (Array.make n 0.0) in
  let p2, v2 = R.sgd ~lr:0.05 ~momentum ~wd ~nesterov (r32a p1) g (r32a v1) in
  check_close "sgd param" p2 (G.Tensor.to_array p);
  check_close "sgd velocity" v2 (G.Tensor.to_array v);
  (* plain SGD: momentum 0, no velocity *)
  let q = tensor [| n |] p0 in
  run (fun cb -> G.sgd_update cb hyper q (tensor [| n |] g));
  check_close "sgd plain" (Array.mapi (fun i x -> x -. (0.05 *. g.(i))) p0) (G.Tensor.to_array q)

let test_adam () =
  let n = 29 in
  let p0 = rand n and g = rand n in
  let b1 = 0.9 and b2 = 0.999 and eps = 1e-8 and wd = 0.01 in
  let p = tensor [| n |] p0 and m = G.Tensor.zeros (dev ()) [| n |] and v = G.Tensor.zeros (dev ()) [| n |] in
  let hyper = tensor [| 2 |] [| 0.01; 1.0 |] in
  let cb = G.Cmdbuf.create (dev ()) in
  G.adam_update cb ~beta1:b1 ~beta2:b2 ~eps ~weight_decay:wd hyper p (tensor [| n |] g) ~m ~v;
  G.Cmdbuf.run cb;
  G.Tensor.write_array hyper [| 0.01; 2.0 |];
  G.Cmdbuf.run cb;
  let r32a = Array.map r32 in
  let p1, m1, v1 = R.adam ~lr:0.01 ~t:1.0 ~b1 ~b2 ~eps ~wd p0 g (Array.make n 0.0) (Array.make n 0.0) in
  let p2, m2, v2 = R.adam ~lr:0.01 ~t:2.0 ~b1 ~b2 ~eps ~wd (r32a p1) g (r32a m1) (r32a v1) in
  check_close "adam param" p2 (G.Tensor.to_array p);
  check_close "adam m" m2 (G.Tensor.to_array m);
  check_close "adam v" v2 (G.Tensor.to_array v)

let test_zero_size () =
  let a = tensor [| 0; 5 |] [||] and b = tensor [| 5; 3 |] (rand 15) and c = tensor [| 0; 3 |] [||] in
  let s = poisoned [| 1 |] in
  run (fun cb -> G.matmul cb a b ~out:c; G.sum_all cb a ~out:s);
  Alcotest.(check (array (float 0.0))) "empty result" [||] (G.Tensor.to_array c);
  check_exact "sum of nothing" [| 0.0 |] (G.Tensor.to_array s)

let op_tests =
  let tc name f = Alcotest.test_case name `Quick f in
  List.concat
    [
      List.concat_map
        (fun (ta, tb) ->
          [ tc (Printf.sprintf "matmul ta=%b tb=%b" ta tb) (test_matmul ~ta ~tb ~alpha:1.0 ~beta:0.0);
            tc (Printf.sprintf "matmul ta=%b tb=%b alpha beta" ta tb) (test_matmul ~ta ~tb ~alpha:0.5 ~beta:0.25) ])
        [ (false, false); (true, false); (false, true); (true, true) ];
      [ tc "matmul_batched" test_matmul_batched; tc "add" test_add; tc "mul" test_mul; tc "scale, fill" test_scale_fill ];
      List.concat_map
        (fun (act, name) ->
          [ tc ("linear_forward " ^ name) (test_linear_forward act ~bias:true);
            tc ("linear_forward " ^ name ^ " no bias") (test_linear_forward act ~bias:false) ])
        acts;
      List.map
        (fun (name, cv, act) -> tc ("conv2d_forward " ^ name) (test_conv2d_forward cv act))
        [ ("3x3 pad 1", conv_case ~pad:1 ~n:2 ~c:3 ~h:7 ~w:6 ~k:4 ~kh:3 ~kw:3 (), G.Identity);
          ("stride 2 relu", conv_case ~stride:2 ~pad:1 ~n:2 ~c:2 ~h:9 ~w:8 ~k:3 ~kh:3 ~kw:3 (), G.Relu);
          ("dilation 2", conv_case ~dilation:2 ~pad:2 ~n:1 ~c:2 ~h:8 ~w:8 ~k:2 ~kh:3 ~kw:3 (), G.Tanh);
          ("groups 2, 5x3 kernel", conv_case ~groups:2 ~n:2 ~c:4 ~h:7 ~w:6 ~k:6 ~kh:5 ~kw:3 (), G.Sigmoid);
          ("per axis: stride 2x1, pad 1x2, dilation 1x2",
           { (conv_case ~n:2 ~c:2 ~h:8 ~w:9 ~k:3 ~kh:3 ~kw:3 ()) with sh = 2; sw = 1; ph = 1; pw = 2; dh = 1; dw = 2 },
           G.Relu) ];
      [ tc "maxpool2d 2x2" (test_maxpool (pool_case ~n:2 ~c:3 ~h:8 ~w:7 ~k:2 ()));
        tc "maxpool2d 3x3 stride 2 pad 1" (test_maxpool (pool_case ~stride:2 ~pad:1 ~n:1 ~c:2 ~h:9 ~w:7 ~k:3 ()));
        tc "maxpool2d per axis: 3x2 kernel, stride 2x1, pad 1x0"
          (test_maxpool { (pool_case ~n:1 ~c:2 ~h:7 ~w:6 ~k:3 ()) with pkw = 2; psh = 2; psw = 1; pph = 1; ppw = 0 });
        tc "descriptor makers fill every field" test_descriptors;
        tc "sum_all, sum_axis" test_sum; tc "softmax" test_softmax ];
      List.map (fun (act, name) -> tc ("activation " ^ name) (test_activation act)) acts;
      List.map (fun (act, name) -> tc ("linear_backward " ^ name) (test_linear_backward act)) acts;
      [ tc "conv2d_backward relu pad 1" (test_conv2d_backward (conv_case ~pad:1 ~n:2 ~c:3 ~h:6 ~w:5 ~k:4 ~kh:3 ~kw:3 ()) G.Relu);
        tc "conv2d_backward stride 2 groups 2 gelu"
          (test_conv2d_backward (conv_case ~stride:2 ~groups:2 ~pad:1 ~n:1 ~c:4 ~h:7 ~w:7 ~k:2 ~kh:3 ~kw:3 ()) G.Gelu);
        tc "maxpool2d_backward overlapping" (test_maxpool_backward (pool_case ~stride:1 ~pad:1 ~n:2 ~c:2 ~h:5 ~w:6 ~k:3 ()));
        tc "maxpool2d_backward 2x2" (test_maxpool_backward (pool_case ~n:1 ~c:3 ~h:6 ~w:6 ~k:2 ()));
        tc "softmax_backward" test_softmax_backward;
        tc "softmax_cross_entropy" test_cross_entropy;
        tc "sgd_update momentum" (test_sgd ~nesterov:false);
        tc "sgd_update nesterov" (test_sgd ~nesterov:true);
        tc "adam_update" test_adam;
        tc "zero-size tensors" test_zero_size ];
    ]

let () =
  Printf.printf "neatml OCaml tests: seed %d (NEATML_TEST_SEED), device %s (%s)\n%!" seed
    (G.Device.info (dev ())).name
    (G.Backend.to_string (G.Device.info (dev ())).backend);
  Alcotest.run "neatml"
    [ ("ops", op_tests); ("errors", Test_errors.tests dev); ("lifetime", Test_lifetime.tests dev);
      ("copies", Test_copies.tests dev); ("comm", Test_comm.tests dev);
      ("objects", Test_objects.tests dev); ("dtype", Test_dtype.tests dev); ("amp", Test_amp.tests dev); ("open", Test_open.tests); ("layout", Test_layout.tests); ("threads", Test_threads.tests dev) ]
