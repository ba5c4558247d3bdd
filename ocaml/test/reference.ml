(* reference.ml — plain float64 references of every neatml op, on flat row-major arrays.
   Written for clarity, not speed: loops that follow the math of include/neatml.h. *)

type act = Neatml.Gpu.activation

let gelu_c = sqrt (2.0 /. Float.pi)

let act_forward (a : act) x =
  match a with
  | Identity -> x
  | Relu -> if x > 0.0 then x else 0.0
  | Sigmoid -> 1.0 /. (1.0 +. exp (-.x))
  | Tanh -> tanh x
  | Gelu -> 0.5 *. x *. (1.0 +. tanh (gelu_c *. (x +. (0.044715 *. x *. x *. x))))

(* act'(x) from the forward output y (relu, sigmoid, tanh) or the input x (gelu). *)
let act_grad (a : act) ~x ~y =
  match a with
  | Identity -> 1.0
  | Relu -> if y > 0.0 then 1.0 else 0.0
  | Sigmoid -> y *. (1.0 -. y)
  | Tanh -> 1.0 -. (y *. y)
  | Gelu ->
      let u = gelu_c *. (x +. (0.044715 *. x *. x *. x)) in
      let t = tanh u in
      (0.5 *. (1.0 +. t)) +. (0.5 *. x *. (1.0 -. (t *. t)) *. gelu_c *. (1.0 +. (3.0 *. 0.044715 *. x *. x)))

(* c = alpha op(a) op(b) + beta c; a stored [m,k] (or [k,m] when ta), b [k,n] (or [n,k]). *)
let matmul ~m ~n ~k ~alpha ~beta ~ta ~tb a b c =
  let get_a i p = if ta then a.((p * m) + i) else a.((i * k) + p) in
  let get_b p j = if tb then b.((j * k) + p) else b.((p * n) + j) in
  Array.init (m * n) (fun idx ->
      let i = idx / n and j = idx mod n in
      let s = ref 0.0 in
      for p = 0 to k - 1 do
        s := !s +. (get_a i p *. get_b p j)
      done;
      (alpha *. !s) +. if beta = 0.0 then 0.0 else beta *. c.(idx))

(* z = x w^T + b (pre-activation): x [n,inp], w [out,inp] *)
let linear_pre ~n ~inp ~out x w b =
  Array.init (n * out) (fun idx ->
      let i = idx / out and o = idx mod out in
      let s = ref (match b with Some b -> b.(o) | None -> 0.0) in
      for p = 0 to inp - 1 do
        s := !s +. (x.((i * inp) + p) *. w.((o * inp) + p))
      done;
      !s)

let linear_forward ~n ~inp ~out ~act x w b = Array.map (act_forward act) (linear_pre ~n ~inp ~out x w b)

(* Gradients of y = act(x w^T + b): dz = dy act'; dx = dz w; dw = dz^T x; db = sum_rows dz. *)
let linear_backward ~n ~inp ~out ~act x w b dy =
  let z = linear_pre ~n ~inp ~out x w b in
  let dz = Array.mapi (fun i g -> g *. act_grad act ~x:z.(i) ~y:(act_forward act z.(i))) dy in
  let dx = matmul ~m:n ~n:inp ~k:out ~alpha:1.0 ~beta:0.0 ~ta:false ~tb:false dz w [||] in
  let dw = matmul ~m:out ~n:inp ~k:n ~alpha:1.0 ~beta:0.0 ~ta:true ~tb:false dz x [||] in
  let db = Array.init out (fun o -> Array.fold_left ( +. ) 0.0 (Array.init n (fun i -> dz.((i * out) + o)))) in
  (dx, dw, db)

type conv = {
  n : int; c : int; h : int; w : int; k : int; kh : int; kw : int;
  sh : int; sw : int; ph : int; pw : int; dh : int; dw : int; g : int;
}

let conv_out cv =
  ( ((cv.h + (2 * cv.ph) - (cv.dh * (cv.kh - 1)) - 1) / cv.sh) + 1,
    ((cv.w + (2 * cv.pw) - (cv.dw * (cv.kw - 1)) - 1) / cv.sw) + 1 )

(* Calls f n k oy ox ci ky kx iy ix for every (output, tap) pair that reads inside x. *)
let conv_iter cv f =
  let p, q = conv_out cv in
  let cg = cv.c / cv.g and kg = cv.k / cv.g in
  for n = 0 to cv.n - 1 do
    for k = 0 to cv.k - 1 do
      let grp = k / kg in
      for oy = 0 to p - 1 do
        for ox = 0 to q - 1 do
          for cl = 0 to cg - 1 do
            for ky = 0 to cv.kh - 1 do
              for kx = 0 to cv.kw - 1 do
                let iy = (oy * cv.sh) - cv.ph + (ky * cv.dh) and ix = (ox * cv.sw) - cv.pw + (kx * cv.dw) in
                if iy >= 0 && iy < cv.h && ix >= 0 && ix < cv.w then
                  f n k oy ox ((grp * cg) + cl) cl ky kx iy ix
              done
            done
          done
        done
      done
    done
  done

let x_idx cv n ci iy ix = (((((n * cv.c) + ci) * cv.h) + iy) * cv.w) + ix
let w_idx cv k cl ky kx = (((((k * (cv.c / cv.g)) + cl) * cv.kh) + ky) * cv.kw) + kx

let y_idx cv n k oy ox =
  let p, q = conv_out cv in
  (((((n * cv.k) + k) * p) + oy) * q) + ox

let conv_pre cv x wt b =
  let p, q = conv_out cv in
  let z = Array.make (cv.n * cv.k * p * q) 0.0 in
  (match b with
  | Some b -> Array.iteri (fun i _ -> z.(i) <- b.(i / (p * q) mod cv.k)) z
  | None -> ());
  conv_iter cv (fun n k oy ox ci cl ky kx iy ix ->
      let yi = y_idx cv n k oy ox in
      z.(yi) <- z.(yi) +. (x.(x_idx cv n ci iy ix) *. wt.(w_idx cv k cl ky kx)));
  z

let conv_forward cv ~act x wt b = Array.map (act_forward act) (conv_pre cv x wt b)

let conv_backward cv ~act x wt b dy =
  let z = conv_pre cv x wt b in
  let dz = Array.mapi (fun i g -> g *. act_grad act ~x:z.(i) ~y:(act_forward act z.(i))) dy in
  let dx = Array.make (Array.length x) 0.0 and dw = Array.make (Array.length wt) 0.0 in
  conv_iter cv (fun n k oy ox ci cl ky kx iy ix ->
      let g = dz.(y_idx cv n k oy ox) in
      let xi = x_idx cv n ci iy ix and wi = w_idx cv k cl ky kx in
      dx.(xi) <- dx.(xi) +. (g *. wt.(wi));
      dw.(wi) <- dw.(wi) +. (g *. x.(xi)));
  let p, q = conv_out cv in
  let db = Array.make cv.k 0.0 in
  Array.iteri (fun i g -> let k = i / (p * q) mod cv.k in db.(k) <- db.(k) +. g) dz;
  (dx, dw, db)

type pool = { pn : int; pc : int; ph_ : int; pw_ : int; pkh : int; pkw : int; psh : int; psw : int; pph : int; ppw : int }

let pool_out pl = (((pl.ph_ + (2 * pl.pph) - pl.pkh) / pl.psh) + 1, ((pl.pw_ + (2 * pl.ppw) - pl.pkw) / pl.psw) + 1)

(* For each output: the index in x of the first maximum of its window (row-major order). *)
let pool_argmax pl x =
  let p, q = pool_out pl in
  Array.init (pl.pn * pl.pc * p * q) (fun o ->
      let nc = o / (p * q) and oy = o / q mod p and ox = o mod q in
      let best = ref (-1) in
      for ky = 0 to pl.pkh - 1 do
        for kx = 0 to pl.pkw - 1 do
          let iy = (oy * pl.psh) - pl.pph + ky and ix = (ox * pl.psw) - pl.ppw + kx in
          if iy >= 0 && iy < pl.ph_ && ix >= 0 && ix < pl.pw_ then begin
            let i = (((nc * pl.ph_) + iy) * pl.pw_) + ix in
            if !best < 0 || x.(i) > x.(!best) then best := i
          end
        done
      done;
      !best)

let maxpool pl x = Array.map (fun i -> x.(i)) (pool_argmax pl x)

let maxpool_backward pl x dy =
  let dx = Array.make (Array.length x) 0.0 in
  Array.iteri (fun o i -> dx.(i) <- dx.(i) +. dy.(o)) (pool_argmax pl x);
  dx

let sum_axis shape axis x =
  let outer = ref 1 and inner = ref 1 in
  Array.iteri (fun d s -> if d < axis then outer := !outer * s else if d > axis then inner := !inner * s) shape;
  let len = shape.(axis) in
  Array.init (!outer * !inner) (fun o ->
      let a = o / !inner and b = o mod !inner in
      let s = ref 0.0 in
      for i = 0 to len - 1 do
        s := !s +. x.((((a * len) + i) * !inner) + b)
      done;
      !s)

let softmax ~rows ~cols x =
  Array.init (rows * cols) (fun idx ->
      let r = idx / cols in
      let row = Array.sub x (r * cols) cols in
      let m = Array.fold_left max neg_infinity row in
      let z = Array.fold_left (fun s v -> s +. exp (v -. m)) 0.0 row in
      exp (x.(idx) -. m) /. z)

let softmax_backward ~rows ~cols y dy =
  Array.init (rows * cols) (fun idx ->
      let r = idx / cols in
      let dot = ref 0.0 in
      for j = 0 to cols - 1 do
        dot := !dot +. (dy.((r * cols) + j) *. y.((r * cols) + j))
      done;
      y.(idx) *. (dy.(idx) -. !dot))

let cross_entropy ~rows ~cols logits labels =
  let p = softmax ~rows ~cols logits in
  let s = ref 0.0 in
  for r = 0 to rows - 1 do
    s := !s -. log p.((r * cols) + int_of_float labels.(r))
  done;
  if rows = 0 then 0.0 else !s /. float rows

let cross_entropy_backward ~rows ~cols logits labels =
  let p = softmax ~rows ~cols logits in
  Array.mapi
    (fun idx v ->
      let r = idx / cols and j = idx mod cols in
      (v -. if j = int_of_float labels.(r) then 1.0 else 0.0) /. float rows)
    p

(* One SGD step (PyTorch, dampening 0); returns (param, velocity). *)
let sgd ~lr ~momentum ~wd ~nesterov p g v =
  let g = Array.mapi (fun i gi -> gi +. (wd *. p.(i))) g in
  let v = Array.mapi (fun i vi -> (momentum *. vi) +. g.(i)) v in
  let step = if nesterov then Array.mapi (fun i gi -> gi +. (momentum *. v.(i))) g else v in
  (Array.mapi (fun i pi -> pi -. (lr *. step.(i))) p, v)

(* One AdamW step at step t; returns (param, m, v). *)
let adam ~lr ~t ~b1 ~b2 ~eps ~wd p g m v =
  let p = Array.map (fun pi -> pi *. (1.0 -. (lr *. wd))) p in
  let m = Array.mapi (fun i mi -> (b1 *. mi) +. ((1.0 -. b1) *. g.(i))) m in
  let v = Array.mapi (fun i vi -> (b2 *. vi) +. ((1.0 -. b2) *. g.(i) *. g.(i))) v in
  let c1 = 1.0 -. (b1 ** t) and c2 = 1.0 -. (b2 ** t) in
  (Array.mapi (fun i pi -> pi -. (lr *. (m.(i) /. c1) /. (sqrt (v.(i) /. c2) +. eps))) p, m, v)
