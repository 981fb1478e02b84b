//! The connect page: where a Jira user enters, replaces or removes their own PAT, on its own
//! listener (server TLS only: browsers have no client certificate), reached through a
//! one-time link.
//!
//! | part | module |
//! |---|---|
//! | one-time links and page tokens (signed, opened once) | [`links`] |
//! | the page and its forms | `page` ([`handle`]) |

pub mod links;
mod page;

pub use links::{Claims, ConnectLink, LinkError, Links};
pub use page::{escape, handle};
