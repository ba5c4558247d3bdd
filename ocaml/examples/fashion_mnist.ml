(* fashion_mnist.ml — LeNet on Fashion-MNIST with Neatml.Gpu, the same network and training
   as examples/fashion_mnist.c:

     conv(1->32, 3x3, pad 1) relu  maxpool 2    [B,32,14,14]
     conv(32->64, 3x3, pad 1) relu maxpool 2    [B,64,7,7] seen as [B,3136]
     linear(3136->128) relu  linear(128->10)    softmax cross-entropy
     SGD with momentum 0.9

   The whole training step is recorded once into one command buffer and replayed for every
   batch, with its host copies: the batch's images and labels and [hyper] {learning rate,
   step} (linear warm-up, then cosine decay) come in by copy_from_host, read at each commit;
   the loss and logits go out by copy_to_host, written by the time wait returns. So a step
   waits for the device once, at its own wait, and the host gathers the next batch into the
   same Bigarrays while the device runs this one. He-normal weights, zero biases.

   Mixed precision (--precision bf16|fp16; fp32 is the default and unchanged), as the C
   example: the weights live as float32 masters, of which the forward and backward passes
   read a half copy; activations and gradients are half. The images come in as float32
   and are cast to half; the logits are cast to float32 for the float32 softmax
   cross-entropy, its backward and the host, and the loss gradient cast back to half. The
   updates are sgd_update_mixed (float32 master, velocity and math; the half copy
   rewritten). fp16 adds dynamic loss scaling (its gradients would underflow): the loss
   gradient is multiplied by the scale (Loss_scale.scale), every gradient is checked for
   overflow (Loss_scale.check), the updates divide by the scale and are skipped after an
   overflow, and Loss_scale.update backs the scale off or grows it (PyTorch's defaults).
   All of it is in the recorded step: no host round trip per step. Half precision trains
   on one rank (the collectives take float32 tensors).

   --layout nhwc keeps images, activations and filters channels-last (G.NHWC in the conv
   and pool descriptors; fc1 then reads the pooled [B,7,7,64] in h, w, c order), as the C
   example: the layout cuDNN's half convolutions run fastest in; the same network
   otherwise. The images are one channel, so their host data are the same in both.

   Data-parallel, as the C example (docs/DISTRIBUTED.md): N ranks, one process each, each
   take a shard of every global batch of N x --batch images (rank r the rows
   [r*batch, (r+1)*batch) of the same shuffled order: the order comes from the seed). Rank
   0's parameters are broadcast at the start; in the recorded step, after the backward ops,
   one all_reduce_bucket averages the eight gradients and a one-element all_reduce
   averages the loss, so every rank applies the same update and the loss printed is the
   mean over the ranks. Each rank evaluates its share of the test set; the correct counts
   are summed over the ranks once an epoch. The rank and world size come from --rank and
   --world-size, or RANK / WORLD_SIZE (LOCAL_RANK picks the GPU), or mpirun's
   OMPI_COMM_WORLD_*; rank 0 writes the comm id to --init-file (or $NEATML_INIT_FILE), the
   others read it. Only rank 0 prints. Usage:
     fashion_mnist.exe [--epochs N] [--limit N] [--backend cpu|cuda|auto] [--batch N]
                       [--lr F] [--seed N] [--data DIR] [--precision fp32|bf16|fp16]
                       [--layout nchw|nhwc] [--rank R --world-size N --init-file PATH]
   It prints the test accuracy after each epoch and, as the C example, a last line
     final test_accuracy=0.9012 epochs=5 backend=cpu images_per_s=1234.5
           steady_images_per_s=1300.2 ranks=1
   (with --precision bf16 or fp16, " precision=bf16", and for fp16 " loss_scale=65536": the
   final scale; with --layout nhwc, " layout=nhwc"; images/s count the images of all ranks; steady: the steps after the step
   buffer's first two submissions, which on CUDA search cuDNN's algorithms and capture the
   graph).
   The data are the four idx .gz files of DIR (default /usr/share/datasets/fashion-mnist,
   or $FASHION_MNIST_DIR), decompressed through `gzip -dc`. *)

module G = Neatml.Gpu

(* ---- data ---- *)

let read_gz path =
  let ic = Unix.open_process_args_in "gzip" [| "gzip"; "-dc"; path |] in
  let buf = Buffer.create (1 lsl 20) and chunk = Bytes.create 65536 in
  let rec loop () =
    let n = input ic chunk 0 65536 in
    if n > 0 then (Buffer.add_subbytes buf chunk 0 n; loop ())
  in
  loop ();
  (match Unix.close_process_in ic with
  | Unix.WEXITED 0 -> ()
  | _ -> failwith ("gzip -dc failed on " ^ path));
  Buffer.contents buf

(* A file shorter than its header says (truncated download, wrong file) is refused with its
   name before any byte past the end is read. *)
let need path s bytes =
  if String.length s < bytes then
    failwith
      (Printf.sprintf "%s: truncated or corrupt: %d of %d bytes" path (String.length s) bytes)

let be32 s off =
  (Char.code s.[off] lsl 24) lor (Char.code s.[off + 1] lsl 16) lor (Char.code s.[off + 2] lsl 8)
  lor Char.code s.[off + 3]

(* idx3: magic 2051, count, rows, cols, then bytes. Pixels scaled to [0,1] and standardised
   with Fashion-MNIST's mean and deviation. *)
let load_images path =
  let s = read_gz path in
  need path s 16;
  if be32 s 0 <> 2051 then failwith (path ^ ": not an idx3 image file");
  let n = be32 s 4 and rows = be32 s 8 and cols = be32 s 12 in
  if rows <> 28 || cols <> 28 then failwith (path ^ ": images are not 28x28");
  need path s (16 + (n * 784));
  let a = Bigarray.Array1.create Bigarray.float32 Bigarray.c_layout (n * 784) in
  for i = 0 to (n * 784) - 1 do
    a.{i} <- ((float (Char.code s.[16 + i]) /. 255.0) -. 0.2860) /. 0.3530
  done;
  (n, a)

let load_labels path =
  let s = read_gz path in
  need path s 8;
  if be32 s 0 <> 2049 then failwith (path ^ ": not an idx1 label file");
  let n = be32 s 4 in
  need path s (8 + n);
  (n, Array.init n (fun i -> Char.code s.[8 + i]))

(* ---- the network ---- *)

(* What the passes read: of the precision's type (half copies of the masters in mixed
   precision, the float32 weights themselves otherwise). *)
type params = {
  w1 : G.Tensor.t; b1 : G.Tensor.t; w2 : G.Tensor.t; b2 : G.Tensor.t;
  w3 : G.Tensor.t; b3 : G.Tensor.t; w4 : G.Tensor.t; b4 : G.Tensor.t;
}

let to_list p = [ p.w1; p.b1; p.w2; p.b2; p.w3; p.b3; p.w4; p.b4 ]

let conv layout = G.Conv2d.make ~pad:1 ~layout 3 3
let pool layout = G.Pool2d.make ~layout 2 2

(* The shape of n images of c channels of h x w: [n; c; h; w], or [n; h; w; c] in NHWC; a
   bank of n filters of c channels of h x w likewise ([k; c; 3; 3] or [k; 3; 3; c]). *)
let image layout n c h w = match layout with G.NCHW -> [| n; c; h; w |] | G.NHWC -> [| n; h; w; c |]

(* He initialisation (normal, std sqrt(2 / fan_in)) and zero biases, as the C example.
   Returns the float32 weights and what the passes read: for a half [dtype], copies of
   them rounded to it (the masters stay float32); for F32, the same tensors. *)
let init_params dev rng dtype layout =
  let normal () =
    (* Box-Muller; 1 - u keeps the logarithm's argument in (0, 1] *)
    let u = 1.0 -. Random.State.float rng 1.0 and v = Random.State.float rng 1.0 in
    sqrt (-2.0 *. log u) *. cos (2.0 *. Float.pi *. v)
  in
  let weight shape =
    let n = Array.fold_left ( * ) 1 shape and fan_in = Array.fold_left ( * ) 1 shape / shape.(0) in
    let std = sqrt (2.0 /. float fan_in) in
    G.Tensor.of_array dev shape (Array.init n (fun _ -> std *. normal ()))
  in
  let zeros k = G.Tensor.zeros dev [| k |] in
  let masters =
    {
      w1 = weight (image layout 32 1 3 3); b1 = zeros 32;
      w2 = weight (image layout 64 32 3 3); b2 = zeros 64;
      w3 = weight [| 128; 3136 |]; b3 = zeros 128;
      w4 = weight [| 10; 128 |]; b4 = zeros 10;
    }
  in
  if dtype = G.Dtype.F32 then (masters, masters)
  else
    let copy m =
      let t = G.Tensor.create ~dtype dev (G.Tensor.shape m) in
      G.Tensor.write t (G.Tensor.to_bigarray m) (* rounded to dtype *);
      t
    in
    ( masters,
      {
        w1 = copy masters.w1; b1 = copy masters.b1; w2 = copy masters.w2; b2 = copy masters.b2;
        w3 = copy masters.w3; b3 = copy masters.b3; w4 = copy masters.w4; b4 = copy masters.b4;
      } )

type host = (float, Bigarray.float32_elt, Bigarray.c_layout) Bigarray.Array1.t

let host n : host = Bigarray.Array1.create Bigarray.float32 Bigarray.c_layout n
let ga = Bigarray.genarray_of_array1

(* The activations of one batch size (of the parameters' type) and the host side of its
   copies, and the forward pass recorded into cb: the images copied in from [x_host], the
   logits out to [logits_host]. x32 and logits32 are the float32 sides of the casts in
   mixed precision (the host copies and the loss are float32); x and logits in fp32. *)
type forward = {
  x : G.Tensor.t; a1 : G.Tensor.t; p1 : G.Tensor.t; a2 : G.Tensor.t; p2 : G.Tensor.t;
  p2_flat : G.Tensor.t; h : G.Tensor.t; logits : G.Tensor.t;
  x32 : G.Tensor.t; logits32 : G.Tensor.t;
  x_host : host; (* read at commit *)
  logits_host : host; (* written by wait *)
}

let record_forward dev cb layout p batch =
  let dtype = G.Tensor.dtype p.w1 in
  let t shape = G.Tensor.create ~dtype dev shape in
  let img = image layout batch and conv = conv layout and pool = pool layout in
  let f32 t' shape = if dtype = G.Dtype.F32 then t' else G.Tensor.create dev shape in
  let x_host = host (batch * 784) and logits_host = host (batch * 10) in
  let x = t (img 1 28 28) and a1 = t (img 32 28 28) and p1 = t (img 32 14 14) in
  let a2 = t (img 64 14 14) and p2 = t (img 64 7 7) in
  let p2_flat = G.Tensor.view p2 [| batch; 3136 |] (* in NHWC, h, w, c order *) in
  let h = t [| batch; 128 |] and logits = t [| batch; 10 |] in
  let x32 = f32 x (img 1 28 28) (* one channel: the same bytes in both layouts *) and logits32 = f32 logits [| batch; 10 |] in
  G.copy_from_host cb (ga x_host) ~out:x32;
  if x32 != x then G.cast cb x32 ~out:x;
  G.conv2d_forward cb conv ~act:G.Relu ~bias:p.b1 x p.w1 ~out:a1;
  G.maxpool2d cb pool a1 ~out:p1;
  G.conv2d_forward cb conv ~act:G.Relu ~bias:p.b2 p1 p.w2 ~out:a2;
  G.maxpool2d cb pool a2 ~out:p2;
  G.linear_forward cb ~act:G.Relu ~bias:p.b3 p2_flat p.w3 ~out:h;
  G.linear_forward cb ~bias:p.b4 h p.w4 ~out:logits;
  if logits32 != logits then G.cast cb logits ~out:logits32;
  { x; a1; p1; a2; p2; p2_flat; h; logits; x32; logits32; x_host; logits_host }

(* The buffer, and the host side of its copies besides the forward's. *)
type train_step = {
  cb : G.Cmdbuf.t;
  f : forward;
  labels_host : host; (* read at commit *)
  hyper_host : host; (* {learning rate, step}, read at commit *)
  loss_host : host; (* written by wait *)
}

(* The batch and hyper from the host, forward, loss, backward, the SGD updates, then the
   loss and logits to the host: all in one command buffer. With a comm (data-parallel) the
   eight gradients are averaged over the ranks in one bucket before the updates, and the
   loss too (what the host reads). Mixed precision (see the top): [masters] are the
   float32 weights of which [p] holds the half copies, the loss is float32, and [scaler]
   (fp16) scales the loss gradient, checks the gradients and moves the scale. *)
let record_train_step ?comm ?scaler dev layout ~masters p batch =
  let cb = G.Cmdbuf.create dev in
  let dtype = G.Tensor.dtype p.w1 in
  let t shape = G.Tensor.create dev shape in
  let th shape = G.Tensor.create ~dtype dev shape in
  let img = image layout batch and conv = conv layout and pool = pool layout in
  let labels = t [| batch |] and loss = t [| 1 |] and hyper = t [| 2 |] in
  let labels_host = host batch and hyper_host = host 2 and loss_host = host 1 in
  G.copy_from_host cb (ga labels_host) ~out:labels;
  G.copy_from_host cb (ga hyper_host) ~out:hyper;
  let f = record_forward dev cb layout p batch in
  let dlogits = th [| batch; 10 |] and dh = th [| batch; 128 |] in
  let dlogits32 = if dtype = G.Dtype.F32 then dlogits else t [| batch; 10 |] in
  let dp2 = th (img 64 7 7) in
  let dp2_flat = G.Tensor.view dp2 [| batch; 3136 |] in
  let da2 = th (img 64 14 14) and dp1 = th (img 32 14 14) and da1 = th (img 32 28 28) in
  let grad_like w = th (G.Tensor.shape w) in
  let params = to_list p in
  let grads = List.map grad_like params in
  let gw1, gb1, gw2, gb2, gw3, gb3, gw4, gb4 =
    match grads with
    | [ a; b; c; d; e; f; g; h ] -> (a, b, c, d, e, f, g, h)
    | _ -> assert false
  in
  G.softmax_cross_entropy cb f.logits32 labels ~out:loss;
  G.softmax_cross_entropy_backward cb f.logits32 labels ~dlogits:dlogits32;
  Option.iter (fun s -> G.Loss_scale.scale cb s dlogits32 ~out:dlogits32) scaler;
  if dlogits32 != dlogits then G.cast cb dlogits32 ~out:dlogits;
  G.linear_backward cb ~bias:p.b4 ~y:f.logits ~dx:dh ~dw:gw4 ~db:gb4 f.h p.w4 dlogits;
  G.linear_backward cb ~act:G.Relu ~bias:p.b3 ~y:f.h ~dx:dp2_flat ~dw:gw3 ~db:gb3 f.p2_flat p.w3 dh;
  G.maxpool2d_backward cb pool f.a2 dp2 ~dx:da2;
  G.conv2d_backward cb conv ~act:G.Relu ~bias:p.b2 ~y:f.a2 ~dx:dp1 ~dw:gw2 ~db:gb2 f.p1 p.w2 da2;
  G.maxpool2d_backward cb pool f.a1 dp1 ~dx:da1;
  G.conv2d_backward cb conv ~act:G.Relu ~bias:p.b1 ~y:f.a1 ~dw:gw1 ~db:gb1 f.x p.w1 da1;
  Option.iter
    (fun comm ->
      G.all_reduce_bucket cb comm ~op:G.Avg grads;
      G.all_reduce cb comm ~op:G.Avg loss ~out:loss)
    comm;
  Option.iter (G.Loss_scale.check cb grads) scaler;
  List.iter2
    (fun (master, param) grad ->
      (* zeroed once here (the library never clears it), not by a fill in the step: a
         replayed fill would reset the momentum at every batch *)
      let velocity = G.Tensor.zeros dev (G.Tensor.shape param) in
      if dtype = G.Dtype.F32 then G.sgd_update cb ~momentum:0.9 ~velocity hyper param grad
      else G.sgd_update_mixed cb ~momentum:0.9 ~velocity ?scaler ~param hyper master grad)
    (List.combine (to_list masters) params)
    grads;
  Option.iter (fun s -> G.Loss_scale.update cb s) scaler;
  G.copy_to_host cb loss ~out:(ga loss_host);
  G.copy_to_host cb f.logits32 ~out:(ga f.logits_host);
  { cb; f; labels_host; hyper_host; loss_host }

(* Warm-up over the first [warmup] steps, then cosine decay to zero at the last step. *)
let learning_rate lr0 t ~warmup ~total =
  if t <= warmup then lr0 *. float t /. float warmup
  else
    let progress = float (t - warmup) /. float (max 1 (total - warmup)) in
    lr0 *. 0.5 *. (1.0 +. cos (Float.pi *. progress))

let argmax_row (logits : host) i =
  let best = ref 0 in
  for c = 1 to 9 do
    if logits.{(i * 10) + c} > logits.{(i * 10) + !best} then best := c
  done;
  !best

(* ---- ranks ---- *)

(* Every rank starts from rank 0's parameters: one buffer of a broadcast per tensor. *)
let broadcast_params dev comm p =
  let cb = G.Cmdbuf.create dev in
  List.iter (fun t -> G.broadcast cb comm ~root:0 t ~out:t) (to_list p);
  G.Cmdbuf.run cb

(* The counts summed over the ranks: a copy in, an all-reduce, a copy out, once an epoch
   (float32 holds counts exactly up to 2^24). Alone, the counts are the sums. *)
let sum_over_ranks dev comm counts =
  match comm with
  | None -> counts
  | Some comm ->
      let n = Array.length counts in
      let h = host n and t = G.Tensor.create dev [| n |] and cb = G.Cmdbuf.create dev in
      Array.iteri (fun i c -> h.{i} <- float c) counts;
      G.copy_from_host cb (ga h) ~out:t;
      G.all_reduce cb comm ~op:G.Sum t ~out:t;
      G.copy_to_host cb t ~out:(ga h);
      G.Cmdbuf.run cb;
      Array.init n (fun i -> Float.to_int (Float.round h.{i}))

let env_int names default =
  let value name = Option.bind (Sys.getenv_opt name) int_of_string_opt in
  match List.find_map value names with Some v -> v | None -> default

(* Rank 0 makes the id and writes its text to [path] (to path.tmp, then renamed, so that
   readers never see half of it); the others poll for the file, up to 300 s. *)
let share_id backend rank path =
  if rank = 0 then (
    let id = G.Comm.Id.create backend in
    let tmp = path ^ ".tmp" in
    (try
       let oc = open_out tmp in
       output_string oc (G.Comm.Id.to_string id ^ "\n");
       close_out oc;
       Sys.rename tmp path
     with Sys_error msg -> Printf.eprintf "fashion_mnist: %s: cannot write the comm id (%s)\n" path msg; exit 1);
    id)
  else
    let read () =
      match open_in path with
      | exception Sys_error _ -> None
      | ic ->
          let line = try Some (input_line ic) with End_of_file -> None in
          close_in ic;
          Option.bind line G.Comm.Id.of_string_opt
    in
    let rec poll i =
      match read () with
      | Some id -> id
      | None when i < 30000 -> Unix.sleepf 0.01; poll (i + 1)
      | None ->
          Printf.eprintf "fashion_mnist: rank %d: no comm id in %s after 300 s (is rank 0 running?)\n" rank path;
          exit 1
    in
    poll 0

(* ---- main ---- *)

let () =
  let epochs = ref 5 and limit = ref 0 and backend = ref "auto" and batch = ref 128 in
  let lr = ref 0.05 and seed = ref 42 in
  let rank = ref (-1) and world = ref (-1) and init_file = ref "" in
  let precision = ref G.Dtype.F32 in
  let set_precision = function
    | "fp32" -> precision := G.Dtype.F32
    | "bf16" -> precision := G.Dtype.Bf16
    | "fp16" -> precision := G.Dtype.F16
    | v -> raise (Arg.Bad ("--precision wants fp32, bf16 or fp16, got '" ^ v ^ "'"))
  in
  let layout = ref G.NCHW in
  let set_layout = function
    | "nchw" -> layout := G.NCHW
    | "nhwc" -> layout := G.NHWC
    | v -> raise (Arg.Bad ("--layout wants nchw or nhwc, got '" ^ v ^ "'"))
  in
  let data =
    ref (try Sys.getenv "FASHION_MNIST_DIR" with Not_found -> "/usr/share/datasets/fashion-mnist")
  in
  Arg.parse
    [
      ("--epochs", Arg.Set_int epochs, "N  training epochs (default 5)");
      ("--limit", Arg.Set_int limit, "N  train on the first N images only (0: all)");
      ("--backend", Arg.Set_string backend, "NAME  auto, cpu or cuda (default auto)");
      ("--batch", Arg.Set_int batch, "N  batch size of each rank (default 128)");
      ("--lr", Arg.Set_float lr, "F  peak learning rate (default 0.05)");
      ("--seed", Arg.Set_int seed, "N  seed of the initialisation and the shuffles (default 42)");
      ("--data", Arg.Set_string data, "DIR  folder of the Fashion-MNIST .gz files");
      ("--rank", Arg.Set_int rank, "R  this process's rank (default $RANK, $OMPI_COMM_WORLD_RANK or 0)");
      ("--world-size", Arg.Set_int world,
       "N  number of ranks (default $WORLD_SIZE, $OMPI_COMM_WORLD_SIZE or 1)");
      ("--init-file", Arg.Set_string init_file,
       "PATH  where rank 0 writes the comm id for the others (default $NEATML_INIT_FILE)");
      ("--precision", Arg.String set_precision,
       "P  fp32, bf16 or fp16: the type of the weights' copies, activations and gradients (default fp32)");
      ("--layout", Arg.String set_layout,
       "L  nchw or nhwc: the order of the images, activations and filters (default nchw)");
    ]
    (fun a -> raise (Arg.Bad ("unexpected argument " ^ a)))
    "fashion_mnist.exe [options]: LeNet on Fashion-MNIST with Neatml.Gpu";
  let backend =
    match G.Backend.of_string !backend with
    | b -> b
    | exception G.Error (_, msg) ->
        prerr_endline msg;
        exit 2
  in
  (* One process per rank: the rank from the flags, the launcher (torchrun's names) or
     mpirun; the GPU from LOCAL_RANK (the rank on this machine). *)
  let rank = if !rank >= 0 then !rank else env_int [ "RANK"; "OMPI_COMM_WORLD_RANK" ] 0 in
  let world = if !world >= 1 then !world else env_int [ "WORLD_SIZE"; "OMPI_COMM_WORLD_SIZE" ] 1 in
  if world < 1 || rank < 0 || rank >= world then (
    Printf.eprintf "fashion_mnist: rank %d of a world of %d\n" rank world;
    exit 2);
  if !precision <> G.Dtype.F32 && world > 1 then (
    prerr_endline "fashion_mnist: --precision bf16/fp16 trains on one rank (the collectives take float32 tensors)";
    exit 2);
  let lead = rank = 0 in
  let local = env_int [ "LOCAL_RANK"; "OMPI_COMM_WORLD_LOCAL_RANK" ] rank in
  let dev = G.Device.create ~backend ~index:(if backend = G.Backend.Cpu then 0 else local) () in
  let info = G.Device.info dev in
  let comm =
    if world = 1 then None
    else
      let path =
        if !init_file <> "" then !init_file
        else
          match Sys.getenv_opt "NEATML_INIT_FILE" with
          | Some p -> p
          | None ->
              Printf.eprintf "fashion_mnist: rank %d of %d: no --init-file (or NEATML_INIT_FILE) to share the comm id\n"
                rank world;
              exit 2
      in
      let id = share_id info.backend rank path in
      let comm = G.Comm.create dev id ~nranks:world ~rank in
      if lead then Sys.remove path (* every rank has joined: the next run starts afresh *);
      Some comm
  in
  let file name =
    let path = Filename.concat !data name in
    if not (Sys.file_exists path) then (
      Printf.eprintf "fashion_mnist: %s: no such file (install dataset-fashion-mnist, or pass --data DIR)\n" path;
      exit 1);
    path
  in
  let load f name =
    try f (file name) with Failure msg -> Printf.eprintf "fashion_mnist: %s\n" msg; exit 1
  in
  let ntrain, train_x = load load_images "train-images-idx3-ubyte.gz" in
  let _, train_y = load load_labels "train-labels-idx1-ubyte.gz" in
  let ntest, test_x = load load_images "t10k-images-idx3-ubyte.gz" in
  let _, test_y = load load_labels "t10k-labels-idx1-ubyte.gz" in
  let ntrain = if !limit > 0 then min !limit ntrain else ntrain in
  let batch = !batch in
  let steps = ntrain / (batch * world) in
  if steps = 0 then (
    Printf.eprintf "fashion_mnist: %d training images do not fill one batch of %d x %d\n" ntrain world batch;
    exit 2);
  if lead then (
    Printf.printf "device: %s (%s); %d training images, %d test images, batch %d" info.name
      (G.Backend.to_string info.backend) ntrain ntest (batch * world);
    if world > 1 then Printf.printf ", %d ranks of %d images a batch" world batch;
    print_newline ();
    if info.selection <> "" then Printf.printf "backends passed over: %s\n%!" info.selection);
  let rng = Random.State.make [| !seed |] in
  let masters, p = init_params dev rng !precision !layout in
  Option.iter (fun comm -> broadcast_params dev comm p) comm;
  (* [scale; found_inf; good steps], then read and written by the step's ops only *)
  let scaler = if !precision = G.Dtype.F16 then Some (G.Loss_scale.create dev) else None in
  let step = record_train_step ?comm ?scaler dev !layout ~masters p batch in
  (* Evaluation: a forward-only buffer of 500 images sharing the parameters, over this
     rank's share of the test set [test_first, test_last); its last chunk is padded with
     zero images when the share is not a multiple of it (their rows are not counted). *)
  let eval_batch = min 500 ntest in
  let eval_cb = G.Cmdbuf.create dev in
  let ef = record_forward dev eval_cb !layout p eval_batch in
  G.copy_to_host eval_cb ef.logits32 ~out:(ga ef.logits_host);
  let test_first = ntest * rank / world and test_last = ntest * (rank + 1) / world in
  let evaluate () =
    let correct = ref 0 in
    let first = ref test_first in
    while !first < test_last do
      let count = min eval_batch (test_last - !first) in
      Bigarray.Array1.blit (Bigarray.Array1.sub test_x (!first * 784) (count * 784))
        (Bigarray.Array1.sub ef.x_host 0 (count * 784));
      if count < eval_batch then Bigarray.Array1.fill (Bigarray.Array1.sub ef.x_host (count * 784) ((eval_batch - count) * 784)) 0.0;
      G.Cmdbuf.run eval_cb;
      for i = 0 to count - 1 do
        if argmax_row ef.logits_host i = test_y.(!first + i) then incr correct
      done;
      first := !first + count
    done;
    !correct
  in
  (* Batch k+1 is gathered into the step's host Bigarrays once commit has read batch k.
     Global batch k is order.(k*B*W ..); this rank's rows of it start at rank*B. *)
  let gather order k =
    let first = ((k * world) + rank) * batch in
    for i = 0 to batch - 1 do
      let img = order.(first + i) in
      Bigarray.Array1.blit (Bigarray.Array1.sub train_x (img * 784) 784) (Bigarray.Array1.sub step.f.x_host (i * 784) 784);
      step.labels_host.{i} <- float train_y.(img)
    done
  in
  let labels = host batch (* the labels of the step running *) in
  let order = Array.init ntrain Fun.id in
  let total = steps * !epochs in
  let warmup = min (total / 20) 300 in
  let t = ref 0 and test_acc = ref 0.0 and train_time = ref 0.0 in
  (* Steady state: the steps after the step buffer's first two submissions (on CUDA the first
     searches cuDNN's algorithms, the second captures the graph), as the C example. *)
  let steady_time = ref 0.0 and steady_steps = ref 0 in
  for epoch = 1 to !epochs do
    for i = ntrain - 1 downto 1 do
      let j = Random.State.int rng (i + 1) in
      let tmp = order.(i) in
      order.(i) <- order.(j);
      order.(j) <- tmp
    done;
    let t0 = Unix.gettimeofday () and loss_sum = ref 0.0 and correct = ref 0 in
    let steady_t0 = ref (if !t >= 2 then Some t0 else None) in
    gather order 0;
    for k = 0 to steps - 1 do
      incr t;
      step.hyper_host.{0} <- learning_rate !lr !t ~warmup ~total;
      step.hyper_host.{1} <- float !t;
      G.Cmdbuf.commit step.cb;
      Bigarray.Array1.blit step.labels_host labels;
      if k + 1 < steps then gather order (k + 1);
      G.Cmdbuf.wait step.cb;
      if !t = 2 then steady_t0 := Some (Unix.gettimeofday ())
      else if !t > 2 then incr steady_steps;
      let loss = step.loss_host.{0} in
      if not (Float.is_finite loss)
      then (Printf.eprintf "the loss diverged at step %d: try a smaller --lr\n" !t; exit 1);
      for i = 0 to batch - 1 do
        if float (argmax_row step.f.logits_host i) = labels.{i} then incr correct
      done;
      loss_sum := !loss_sum +. loss
    done;
    let t1 = Unix.gettimeofday () in
    let dt = t1 -. t0 in
    train_time := !train_time +. dt;
    Option.iter (fun s -> steady_time := !steady_time +. (t1 -. s)) !steady_t0;
    let te0 = Unix.gettimeofday () in
    let counts = sum_over_ranks dev comm [| !correct; evaluate () |] in
    test_acc := float counts.(1) /. float ntest;
    if lead then
      Printf.printf
        "epoch %d/%d: loss %.4f  train accuracy %.4f  test accuracy %.4f  (%.1f s, %.1f images/s; evaluation %.1f s)\n%!"
        epoch !epochs (!loss_sum /. float steps)
        (float counts.(0) /. float (steps * batch * world))
        !test_acc dt
        (float (steps * batch * world) /. dt)
        (Unix.gettimeofday () -. te0)
  done;
  if lead then begin
    Printf.printf "final test_accuracy=%.4f epochs=%d backend=%s images_per_s=%.1f steady_images_per_s=%.1f ranks=%d"
      !test_acc !epochs
      (G.Backend.to_string info.backend)
      (float (steps * batch * world * !epochs) /. !train_time)
      (if !steady_time > 0.0 then float (!steady_steps * batch * world) /. !steady_time else 0.0)
      world;
    if !precision <> G.Dtype.F32 then
      Printf.printf " precision=%s" (if !precision = G.Dtype.Bf16 then "bf16" else "fp16");
    if !layout = G.NHWC then print_string " layout=nhwc";
    Option.iter (fun s -> Printf.printf " loss_scale=%g" (G.Tensor.to_array s).(0)) scaler;
    print_newline ()
  end;
  (* The buffers before the comm, as the C example: a buffer that recorded a collective
     keeps backend state for the comm (on CUDA a captured graph of NCCL kernels). *)
  G.Cmdbuf.free step.cb;
  G.Cmdbuf.free eval_cb;
  Option.iter G.Comm.free comm
