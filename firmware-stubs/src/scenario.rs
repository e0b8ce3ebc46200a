//! Scenario timelines (`firmware-stubs/scenarios/*.toml`): at time t, do an action.
//!
//! INTERFACE SKELETON, to be filled by the physics/scenario work.

/// One thing a scenario does to the world at its time.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {}
