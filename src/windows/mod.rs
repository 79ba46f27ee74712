//! The Windows side: the trigger that asks Windows to attach the disk, and
//! the generated PowerShell files.

pub mod install;
pub mod script;
pub mod trigger;
