//! Host bindings generated from `wit/`. The host is generated from the `policy` world (every
//! hook) but loads each hook's exports on its own, so a component may export any subset.

wasmtime::component::bindgen!({
    path: "wit",
    world: "policy",
    // Decisions go into the pod-template hash and into status comparisons; the 0.2.0
    // contract is translated through serde (`contract_v0_2`).
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
});

/// The 0.2.0 contract, frozen in `wit/versions/0.2.0`: the current one without the lifecycle
/// decision's `checkpoint`, so its types translate field by field (`contract_v0_2`).
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "wit/versions/0.2.0",
        world: "policy",
        additional_derives: [serde::Serialize, serde::Deserialize],
    });
}

/// The 0.1.0 contract, frozen in `wit/versions/0.1.0`: components built against it keep
/// loading, and the host translates inputs down and decisions up (`contract_v0_1`).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "wit/versions/0.1.0",
        world: "policy",
    });
}
