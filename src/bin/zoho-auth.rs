//! The `zoho-auth` command line (being written).
fn main() {}
