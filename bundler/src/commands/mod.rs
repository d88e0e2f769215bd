//! One module per subcommand of `meshguard-bundle`, each with its arguments and a `run` that
//! calls the library and prints what it did; `shared` holds the arguments several take.

pub(crate) mod audit_archive;
pub(crate) mod backup;
pub(crate) mod create;
pub(crate) mod evidence;
pub(crate) mod images;
pub(crate) mod import;
pub(crate) mod inspect;
pub(crate) mod install;
pub(crate) mod keys;
pub(crate) mod pack;
pub(crate) mod shared;
pub(crate) mod verify;
