(* test_layout.ml — the NHWC layout of conv2d and maxpool2d on the CPU device: each op,
   forward then backward, run in NHWC on the transposed data and its results transposed
   back, against the same ops in NCHW (test_gpu.ml checks those against the reference). The
   same arithmetic with the elements in another order: maxpool bit for bit (each output
   picks the same element, each dx adds the same dy in the same order), conv within 1e-5
   relative (its sums may run in another order). Also: the layout reaches the library (an
   NHWC descriptor refuses NCHW tensors). *)

module G = Neatml.Gpu

let rng = Random.State.make [| 2468 |]
let r32 x = Int32.float_of_bits (Int32.bits_of_float x)
let rand n = Array.init n (fun _ -> r32 (Random.State.float rng 2.0 -. 1.0))
let cpu = lazy (G.Device.create ~backend:G.Backend.Cpu ())
let tensor shape data = G.Tensor.of_array (Lazy.force cpu) shape data
let poisoned shape = tensor shape (Array.make (Array.fold_left ( * ) 1 shape) Float.nan)

let run f =
  let cb = G.Cmdbuf.create (Lazy.force cpu) in
  f cb;
  G.Cmdbuf.run cb;
  G.Cmdbuf.free cb

(* As test_gpu.ml's: |got - expected| <= tol (1 + |expected|), NaN never passes; tol 0 is
   equality. *)
let check_close ~tol name expected got =
  Alcotest.(check int) (name ^ ": element count") (Array.length expected) (Array.length got);
  Array.iteri
    (fun i e ->
      let g = got.(i) in
      if not (Float.abs (g -. e) <= tol *. (1.0 +. Float.abs e)) then
        Alcotest.failf "%s: element %d is %.9g in NHWC, %.9g in NCHW" name i g e)
    expected

(* (a, b, c, d) are the sizes in NCHW order: [N,C,H,W], or [K,C/groups,kh,kw] for filters,
   which move alike. nhwc_index gives the place in the [a; c; d; b] layout of NCHW element i;
   to_nhwc lays NCHW data out that way, to_nchw reads it back. *)
let nhwc_index (_, b, c, d) i =
  let id = i mod d and r = i / d in
  let ic = r mod c and r = r / c in
  let ib = r mod b and ia = r / b in
  (((((ia * c) + ic) * d) + id) * b) + ib

let to_nhwc dims x =
  let y = Array.make (Array.length x) 0.0 in
  Array.iteri (fun i v -> y.(nhwc_index dims i) <- v) x;
  y

let to_nchw dims y = Array.init (Array.length y) (fun i -> y.(nhwc_index dims i))

(* How one layout holds an NCHW-ordered array: its shape, its tensor, its contents read back
   in NCHW order. *)
let shape layout (a, b, c, d) = match layout with G.NCHW -> [| a; b; c; d |] | G.NHWC -> [| a; c; d; b |]
let put layout dims data = tensor (shape layout dims) (match layout with G.NCHW -> data | G.NHWC -> to_nhwc dims data)

let get layout dims t =
  let a = G.Tensor.to_array t in
  match layout with G.NCHW -> a | G.NHWC -> to_nchw dims a

let test_conv ?(stride_h = 1) ?(stride_w = 1) ?(pad_h = 0) ?(pad_w = 0) ?(dilation_h = 1) ?(dilation_w = 1)
    ?(groups = 1) ~act (n, c, h, w) (k, kh, kw) () =
  let p = ((h + (2 * pad_h) - (dilation_h * (kh - 1)) - 1) / stride_h) + 1
  and q = ((w + (2 * pad_w) - (dilation_w * (kw - 1)) - 1) / stride_w) + 1 in
  let xs = (n, c, h, w) and ws = (k, c / groups, kh, kw) and ys = (n, k, p, q) in
  let x = rand (n * c * h * w) and wt = rand (k * (c / groups) * kh * kw) and b = rand k
  and dy = rand (n * k * p * q) in
  let pass layout =
    let desc = G.Conv2d.make ~stride_h ~stride_w ~pad_h ~pad_w ~dilation_h ~dilation_w ~groups ~layout kh kw in
    let tx = put layout xs x and tw = put layout ws wt and tb = tensor [| k |] b in
    let y = poisoned (shape layout ys) and dx = poisoned (shape layout xs) in
    let dw = poisoned (shape layout ws) and db = poisoned [| k |] in
    run (fun cb ->
        G.conv2d_forward cb desc ~act ~bias:tb tx tw ~out:y;
        G.conv2d_backward cb desc ~act ~bias:tb ~y ~dx ~dw ~db tx tw (put layout ys dy));
    (get layout ys y, get layout xs dx, get layout ws dw, G.Tensor.to_array db)
  in
  let y, dx, dw, db = pass G.NCHW and y', dx', dw', db' = pass G.NHWC in
  check_close ~tol:1e-5 "conv2d_forward y" y y';
  check_close ~tol:1e-5 "conv2d_backward dx" dx dx';
  check_close ~tol:1e-5 "conv2d_backward dw" dw dw';
  check_close ~tol:1e-5 "conv2d_backward db" db db'

let test_pool ?stride_h ?stride_w ?(pad_h = 0) ?(pad_w = 0) (n, c, h, w) (kh, kw) () =
  let sh = Option.value stride_h ~default:kh and sw = Option.value stride_w ~default:kw in
  let p = ((h + (2 * pad_h) - kh) / sh) + 1 and q = ((w + (2 * pad_w) - kw) / sw) + 1 in
  let xs = (n, c, h, w) and ys = (n, c, p, q) in
  let x = rand (n * c * h * w) and dy = rand (n * c * p * q) in
  let pass layout =
    let desc = G.Pool2d.make ?stride_h ?stride_w ~pad_h ~pad_w ~layout kh kw in
    let tx = put layout xs x in
    let y = poisoned (shape layout ys) and dx = poisoned (shape layout xs) in
    run (fun cb ->
        G.maxpool2d cb desc tx ~out:y;
        G.maxpool2d_backward cb desc tx (put layout ys dy) ~dx);
    (get layout ys y, get layout xs dx)
  in
  let y, dx = pass G.NCHW and y', dx' = pass G.NHWC in
  check_close ~tol:0.0 "maxpool2d y" y y';
  check_close ~tol:0.0 "maxpool2d_backward dx" dx dx'

(* NCHW tensors whose NHWC reading does not fit: an NHWC descriptor must refuse them (the
   field reached the library), the default one take them. *)
let test_refused () =
  let x = tensor [| 1; 3; 5; 4 |] (rand 60) and w = tensor [| 2; 3; 3; 3 |] (rand 54) in
  let y = poisoned [| 1; 2; 3; 2 |] and py = poisoned [| 1; 3; 2; 2 |] in
  let refused name f =
    let cb = G.Cmdbuf.create (Lazy.force cpu) in
    (match f cb with
     | () -> Alcotest.failf "%s: NCHW tensors taken by an NHWC descriptor" name
     | exception G.Error (G.Status.Shape_mismatch, _) -> ());
    G.Cmdbuf.free cb
  in
  refused "conv2d_forward" (fun cb -> G.conv2d_forward cb (G.Conv2d.make ~layout:G.NHWC 3 3) x w ~out:y);
  refused "maxpool2d" (fun cb -> G.maxpool2d cb (G.Pool2d.make ~layout:G.NHWC 2 2) x ~out:py);
  run (fun cb ->
      G.conv2d_forward cb (G.Conv2d.make 3 3) x w ~out:y;
      G.maxpool2d cb (G.Pool2d.make 2 2) x ~out:py)

let tests =
  let tc name f = Alcotest.test_case name `Quick f in
  [
    tc "conv2d NHWC = NCHW: 3x3 pad 1 relu" (test_conv ~pad_h:1 ~pad_w:1 ~act:G.Relu (2, 3, 7, 6) (4, 3, 3));
    tc "conv2d NHWC = NCHW: 3x2, stride 2x1, pad 1x0, dilation 1x2, groups 2, gelu"
      (test_conv ~stride_h:2 ~pad_h:1 ~dilation_w:2 ~groups:2 ~act:G.Gelu (2, 4, 9, 8) (6, 3, 2));
    tc "conv2d NHWC = NCHW: depthwise 3x3 stride 2 pad 1 tanh"
      (test_conv ~stride_h:2 ~stride_w:2 ~pad_h:1 ~pad_w:1 ~groups:5 ~act:G.Tanh (1, 5, 8, 7) (5, 3, 3));
    tc "maxpool2d NHWC = NCHW: 2x2" (test_pool (2, 3, 8, 7) (2, 2));
    tc "maxpool2d NHWC = NCHW: 3x3 stride 1 pad 1 (overlapping)"
      (test_pool ~stride_h:1 ~stride_w:1 ~pad_h:1 ~pad_w:1 (2, 4, 6, 5) (3, 3));
    tc "maxpool2d NHWC = NCHW: 3x2, stride 2x1, pad 1x0" (test_pool ~stride_h:2 ~stride_w:1 ~pad_h:1 (1, 3, 7, 6) (3, 2));
    tc "an NHWC descriptor refuses NCHW tensors" test_refused;
  ]
