//! What every call shares: the token, the runtime's user and environment, and the tables of
//! running commands and watches.

use std::sync::Arc;

use crate::files::Watchers;
use crate::process::Table;
use crate::users::User;

pub struct State {
    pub token: String,
    pub user: User,
    /// The environment commands inherit: the runtime's own, without its token.
    pub env: Vec<(String, String)>,
    pub processes: Arc<Table>,
    pub watchers: Arc<Watchers>,
}
