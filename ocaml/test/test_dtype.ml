(* test_dtype.ml — element types through the bindings: typed creation and the type query,
   converting copies (rounded to nearest, ties to even), raw 16-bit copies, neat_cast, and
   an op on half tensors against the float32 result rounded once. The CPU and CUDA run half
   ops in bf16 and f16; Metal runs f16 and refuses bf16 (UNSUPPORTED: no bfloat16 in MPS's
   macOS 12 SDK), which is checked as such there. *)

module G = Neatml.Gpu

let u16 n = Bigarray.Genarray.create Bigarray.int16_unsigned Bigarray.c_layout [| n |]
let bits_of a = Array.init (Bigarray.Genarray.nth_dim a 0) (fun i -> Bigarray.Genarray.get a [| i |])

(* Values exact in bf16 and f16 (small integers and halves), and ones each rounds. *)
let exact = [| 0.0; 1.0; -2.0; 0.5; 3.0; -0.25; 1024.0; 7.0 |]

let test_types dev () =
  let d = dev () in
  List.iter
    (fun (dt, name, size) ->
      let t = G.Tensor.create ~dtype:dt d [| 2; 3 |] in
      Alcotest.(check string) "name" name (G.Dtype.to_string (G.Tensor.dtype t));
      Alcotest.(check int) "size" size (G.Dtype.size dt);
      Alcotest.(check bool) "a view keeps the type" true (G.Tensor.dtype (G.Tensor.view t [| 6 |]) = dt);
      let z = G.Tensor.zeros ~dtype:dt d [| 5 |] in
      Alcotest.(check (array (float 0.0))) "zeros" (Array.make 5 0.0) (G.Tensor.to_array z))
    G.Dtype.[ (F32, "f32", 4); (Bf16, "bf16", 2); (F16, "f16", 2) ];
  Alcotest.(check bool) "create defaults to f32" true (G.Tensor.dtype (G.Tensor.create d [| 1 |]) = G.Dtype.F32)

(* bf16 keeps 8 significant bits, f16 11. 1 + 2^-9: rounds to 1 in bf16, exact in f16;
   1 + 3 * 2^-8: halfway between bf16's 1 + 2^-7 and 1 + 2^-6 (ties to even: the latter),
   exact in f16; 65504: f16's largest, 65536 in bf16; 1e-8: under half of f16's smallest
   subnormal (0 there). *)
let test_copies dev () =
  let d = dev () in
  let x = [| 1.0 +. (2.0 ** -9.0); 1.0 +. (3.0 *. (2.0 ** -8.0)); 65504.0; 1e-8 |] in
  let b = G.Tensor.create ~dtype:G.Dtype.Bf16 d [| 4 |] in
  G.Tensor.write_array b x;
  Alcotest.(check (array (float 0.0))) "bf16 rounding"
    [| 1.0; 1.0 +. (2.0 ** -6.0); 65536.0 |]
    (Array.sub (G.Tensor.to_array b) 0 3);
  let r = u16 4 in
  G.Tensor.read_raw b r;
  Alcotest.(check (array int)) "bf16 bits" [| 0x3f80; 0x3f82; 0x4780 |] (Array.sub (bits_of r) 0 3);
  let h = G.Tensor.create ~dtype:G.Dtype.F16 d [| 4 |] in
  G.Tensor.write_array h x;
  Alcotest.(check (array (float 0.0))) "f16 rounding"
    [| 1.0 +. (2.0 ** -9.0); 1.0 +. (3.0 *. (2.0 ** -8.0)); 65504.0; 0.0 |]
    (G.Tensor.to_array h);
  (* raw bits in: 0x3c00 = 1, 0xc000 = -2, 0x7c00 = inf, 0x0001 = 2^-24 (subnormal) *)
  let src = u16 4 in
  Array.iteri (fun i v -> Bigarray.Genarray.set src [| i |] v) [| 0x3c00; 0xc000; 0x7c00; 0x0001 |];
  G.Tensor.write_raw h src;
  Alcotest.(check (array (float 0.0)))
    "f16 from bits" [| 1.0; -2.0; infinity; 2.0 ** -24.0 |] (G.Tensor.to_array h);
  match G.Tensor.write_raw h (u16 3) with
  | () -> Alcotest.fail "a raw copy of the wrong size succeeded"
  | exception G.Error (G.Status.Shape_mismatch, _) -> ()

let runs_half d dt =
  match (G.Device.info d).backend with
  | G.Backend.Cpu | G.Backend.Cuda -> true
  | G.Backend.Metal -> dt = G.Dtype.F16
  | _ -> false

let run d f =
  let cb = G.Cmdbuf.create d in
  f cb;
  G.Cmdbuf.run cb

(* cast to float32 and a scale in dt; 1/3 rounded once: [third] its bits in dt *)
let test_ops dt third dev () =
  let d = dev () in
  let n = Array.length exact in
  let x = G.Tensor.create ~dtype:dt d [| n |] in
  G.Tensor.write_array x exact;
  let y = G.Tensor.create d [| n |] and s = G.Tensor.create ~dtype:dt d [| n |] in
  let both () =
    run d (fun cb ->
        G.cast cb x ~out:y;
        G.scale cb x 3.0 ~out:s)
  in
  if runs_half d dt then begin
    both ();
    Alcotest.(check (array (float 0.0))) "cast to f32" exact (G.Tensor.to_array y);
    (* 3x is exact in bf16 and f16 for these values (3072 and 21 need 2 and 5 significant bits) *)
    Alcotest.(check (array (float 0.0))) "scale" (Array.map (( *. ) 3.0) exact) (G.Tensor.to_array s);
    (* 1/3 rounds once: the half nearest to the float32 product *)
    let r = G.Tensor.create ~dtype:dt d [| 1 |] in
    let one = G.Tensor.create ~dtype:dt d [| 1 |] in
    G.Tensor.write_array one [| 1.0 |];
    run d (fun cb -> G.scale cb one (1.0 /. 3.0) ~out:r);
    let b = u16 1 in
    G.Tensor.read_raw r b;
    Alcotest.(check int) "1/3 in bits" third (Bigarray.Genarray.get b [| 0 |])
  end
  else
    match both () with
    | () -> Alcotest.fail "a half op ran on a backend documented to refuse it"
    | exception G.Error (G.Status.Unsupported, _) -> ()

let tests (dev : unit -> G.Device.t) =
  let tc name f = Alcotest.test_case name `Quick f in
  [
    tc "typed creation, query, zeros" (test_types dev);
    tc "converting and raw copies round as the formats say" (test_copies dev);
    tc "cast and an op on bf16 (CPU, CUDA; refused on Metal)" (test_ops G.Dtype.Bf16 0x3eab dev);
    tc "cast and an op on f16 (CPU, CUDA, Metal)" (test_ops G.Dtype.F16 0x3555 dev);
  ]
