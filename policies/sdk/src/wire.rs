//! Decisions from their JSON form (`sandman-policy-wire`, camelCase, as CEL hooks and test
//! suites write them) into the WIT types a hook returns, and back.

pub use sandman_policy_wire::*;

use crate::types;

sandman_policy_wire::wit_conversions!(types);
