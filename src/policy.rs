//! Which credential the git host sees: DESIGN.md's policy table as one pure function.
//!
//! No I/O, no clock: the caller states the facts ([`Facts`]) and gets a [`Decision`]. Each row
//! of the table has a test below, and `tests/proxy.rs` (with the TFS rows in
//! `tests/hosts_azure.rs`) drives every row through the real server.

/// What the request does on the host, as the host adapter classified it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A read (indexing): GET, HEAD, and the hosts' read-only calls.
    Read,
    CreateBranch,
    DeleteBranch,
    CreatePullRequest,
    /// Any other write: pushes to refs, merges, settings, ….
    OtherWrite,
}

impl Operation {
    /// The three user actions that Require User PAT applies to.
    pub fn is_action(self) -> bool {
        matches!(
            self,
            Operation::CreateBranch | Operation::DeleteBranch | Operation::CreatePullRequest
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::CreateBranch => "create-branch",
            Operation::DeleteBranch => "delete-branch",
            Operation::CreatePullRequest => "create-pull-request",
            Operation::OtherWrite => "other-write",
        }
    }
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub operation: Operation,
    /// The admin's Require User PAT setting for the integration.
    pub require_user_pat: bool,
    /// False for hosts that have no personal access tokens (TFS 2013 and 2015).
    pub host_supports_pats: bool,
    /// Whether the acting user has a stored PAT for this integration.
    pub user_has_pat: bool,
    /// The integration allow-lists writes other than the three actions.
    pub allow_other_writes: bool,
}

/// The credential to forward with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    UseIntegrationToken,
    UseUserPat,
}

impl Decision {
    /// The value of the `Patgate-Credential` response header.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::UseIntegrationToken => "integration",
            Decision::UseUserPat => "user",
        }
    }
}

/// Why a request is refused before it reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this user has no personal access token for the integration")]
    UserPatRequired,
    #[error("the host does not support personal access tokens")]
    PatUnsupportedByHost,
    #[error("the operation is not one patgate forwards")]
    OperationNotAllowed,
}

/// Whether the decision needs to know if the user has a PAT; lets the caller skip the
/// vault lookup for reads and for integrations without Require User PAT.
pub fn consults_user_pat(operation: Operation, require_user_pat: bool) -> bool {
    operation.is_action() && require_user_pat
}

/// DESIGN.md, "Credential policy".
pub fn decide(facts: Facts) -> Result<Decision, Refusal> {
    match facts.operation {
        Operation::Read => Ok(Decision::UseIntegrationToken),
        Operation::OtherWrite if facts.allow_other_writes => Ok(Decision::UseIntegrationToken),
        Operation::OtherWrite => Err(Refusal::OperationNotAllowed),
        // The three actions.
        _ if !facts.require_user_pat => Ok(Decision::UseIntegrationToken),
        _ if !facts.host_supports_pats => Err(Refusal::PatUnsupportedByHost),
        _ if facts.user_has_pat => Ok(Decision::UseUserPat),
        _ => Err(Refusal::UserPatRequired),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIONS: [Operation; 3] = [
        Operation::CreateBranch,
        Operation::DeleteBranch,
        Operation::CreatePullRequest,
    ];

    fn all_facts(operation: Operation) -> impl Iterator<Item = Facts> {
        (0..16u8).map(move |bits| Facts {
            operation,
            require_user_pat: bits & 1 != 0,
            host_supports_pats: bits & 2 != 0,
            user_has_pat: bits & 4 != 0,
            allow_other_writes: bits & 8 != 0,
        })
    }

    // Row 1: read | any | any | any -> integration
    #[test]
    fn read_always_uses_the_integration_token() {
        for facts in all_facts(Operation::Read) {
            assert_eq!(
                decide(facts),
                Ok(Decision::UseIntegrationToken),
                "{facts:?}"
            );
        }
    }

    // Row 2: action | off | any | any -> integration
    #[test]
    fn action_without_require_user_pat_uses_the_integration_token() {
        for op in ACTIONS {
            for facts in all_facts(op).filter(|f| !f.require_user_pat) {
                assert_eq!(
                    decide(facts),
                    Ok(Decision::UseIntegrationToken),
                    "{facts:?}"
                );
            }
        }
    }

    // Row 3: action | on | TFS 2013/2015 | any -> refuse pat-unsupported-by-host
    #[test]
    fn action_on_a_host_without_pats_is_refused() {
        for op in ACTIONS {
            for facts in all_facts(op).filter(|f| f.require_user_pat && !f.host_supports_pats) {
                assert_eq!(
                    decide(facts),
                    Err(Refusal::PatUnsupportedByHost),
                    "{facts:?}"
                );
            }
        }
    }

    // Row 4: action | on | other | yes -> user PAT
    #[test]
    fn action_with_require_user_pat_and_a_pat_uses_it() {
        for op in ACTIONS {
            for facts in all_facts(op)
                .filter(|f| f.require_user_pat && f.host_supports_pats && f.user_has_pat)
            {
                assert_eq!(decide(facts), Ok(Decision::UseUserPat), "{facts:?}");
            }
        }
    }

    // Row 5: action | on | other | no -> refuse user-pat-required
    #[test]
    fn action_with_require_user_pat_and_no_pat_is_refused() {
        for op in ACTIONS {
            for facts in all_facts(op)
                .filter(|f| f.require_user_pat && f.host_supports_pats && !f.user_has_pat)
            {
                assert_eq!(decide(facts), Err(Refusal::UserPatRequired), "{facts:?}");
            }
        }
    }

    // Row 6: other write | any | any | any -> refuse, or integration if allow-listed
    #[test]
    fn other_writes_are_refused_unless_allow_listed() {
        for facts in all_facts(Operation::OtherWrite) {
            let expected = if facts.allow_other_writes {
                Ok(Decision::UseIntegrationToken)
            } else {
                Err(Refusal::OperationNotAllowed)
            };
            assert_eq!(decide(facts), expected, "{facts:?}");
        }
    }

    #[test]
    fn the_vault_is_consulted_only_when_the_answer_depends_on_it() {
        for op in ACTIONS
            .into_iter()
            .chain([Operation::Read, Operation::OtherWrite])
        {
            for facts in all_facts(op) {
                let flipped = Facts {
                    user_has_pat: !facts.user_has_pat,
                    ..facts
                };
                if decide(facts) != decide(flipped) {
                    assert!(consults_user_pat(op, facts.require_user_pat), "{facts:?}");
                }
            }
        }
    }
}
