//! The KICC gateway, our side: wire types (private), crypto, the client that records every call,
//! and webhook parsing. The rest of the app sees domain results only.

pub mod crypto;
