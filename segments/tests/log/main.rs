//! Integration tests of the `segments` log: one test binary (one link), one module per concern.

mod basics;
mod common;
mod crash;
mod damage;
mod errors;
mod model;
mod sync_jobs;
mod timestamps;
