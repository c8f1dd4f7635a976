//! Host bindings generated from `wit/`. The host is generated from the `policy` world (every
//! hook) but loads each hook's exports on its own, so a component may export any subset.

wasmtime::component::bindgen!({
    path: "wit",
    world: "policy",
    // Decisions go into the pod-template hash and into status comparisons.
    additional_derives: [PartialEq, serde::Serialize],
});
