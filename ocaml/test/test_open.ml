(* test_open.ml — `open Neatml.Gpu` shadows none of Stdlib's exceptions. A compile-time
   property: the bindings below, typed before any expected type is known, name Stdlib's
   exceptions; were the statuses constructors of Gpu's top level, `Invalid_argument "x"`
   would name a constant constructor and `out_of_memory` would be a status, and this file
   would not compile. The test case checks what the compiler picked. *)

open Neatml.Gpu

let invalid_argument = Invalid_argument "stdlib"
let out_of_memory = Out_of_memory
let qualified = Stdlib.Invalid_argument "qualified"

(* result's Error still works where its type is known (without the annotation, Error
   would be Gpu's exception: the one name [open Neatml.Gpu] does shadow) *)
let parse s : (string, string) result = if s = "" then Error "empty" else Ok s

let tests =
  [
    Alcotest.test_case "open Neatml.Gpu keeps Stdlib's exceptions" `Quick (fun () ->
        (match raise invalid_argument with
         | () -> Alcotest.fail "no exception"
         | exception Invalid_argument msg -> Alcotest.(check string) "Stdlib.Invalid_argument" "stdlib" msg);
        Alcotest.(check bool) "Stdlib.Out_of_memory" true (out_of_memory = Stdlib.Out_of_memory);
        Alcotest.(check bool) "qualified" true (qualified = Stdlib.Invalid_argument "qualified");
        Alcotest.(check bool) "result's Error" true (parse "" = Stdlib.Error "empty");
        (* the statuses are in their module *)
        Alcotest.(check string) "Status.Invalid_argument" "NEAT_ERR_INVALID_ARGUMENT"
          (Status.to_string Status.Invalid_argument);
        match Backend.of_string "nope" with
        | _ -> Alcotest.fail "an unknown backend name parsed"
        | exception Error (Status.Invalid_argument, _) -> ());
  ]
