//! Host bindings generated from `wit/`, the current contract. The host is generated from the
//! `policy` world (every hook) but loads each hook's exports on its own, so a component may
//! export any subset. Frozen versions have their bindings in their adapters (`contracts/`).

wasmtime::component::bindgen!({
    path: "wit",
    world: "policy",
    // Decisions go into the pod-template hash and into status comparisons; the 0.2.0
    // contract is translated through serde (`contracts/v0_2.rs`).
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
});
