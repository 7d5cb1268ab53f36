//! The crate root: the module's parts, one concept each. The crate documentation below is
//! the crate's README.
#![doc = include_str!("../README.md")]

mod backing;
mod cluster;
mod config;
mod entry;
mod function_list;
