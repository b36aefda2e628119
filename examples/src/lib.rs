//! Runnable programs for p2pmix users; see the `examples/` folder of this package. Each example's
//! first doc comment says how to run it.

pub mod plot;
