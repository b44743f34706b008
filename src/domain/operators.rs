//! Who may send operator commands (`CommandType::operator_only`): publishers whose messages
//! carry an AMQP `user_id` naming one of the operator users. RabbitMQ refuses a message whose
//! `user_id` is not the user of the connection that published it, so that name is proven by
//! the broker, not claimed by the message.

use crate::domain::command::CommandType;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operators {
    users: Vec<String>,
    /// Every publisher may send operator commands (a deployment whose brokers have one user).
    anyone: bool,
}

impl Operators {
    pub fn only(users: Vec<String>) -> Self {
        Operators {
            users,
            anyone: false,
        }
    }

    pub fn anyone() -> Self {
        Operators {
            users: Vec::new(),
            anyone: true,
        }
    }

    /// Whether a message of `kind` published as `publisher` (its `user_id`) may be applied.
    pub fn may_send(&self, kind: CommandType, publisher: Option<&str>) -> bool {
        !kind.operator_only()
            || self.anyone
            || publisher.is_some_and(|name| self.users.iter().any(|user| user == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_operators_send_operator_commands() {
        let operators = Operators::only(vec!["ops".into(), "ops-2".into()]);
        for kind in [
            CommandType::CashApprove,
            CommandType::CashReject,
            CommandType::CashRetrieve,
        ] {
            assert!(operators.may_send(kind, Some("ops")));
            assert!(operators.may_send(kind, Some("ops-2")));
            assert!(!operators.may_send(kind, Some("upstream")));
            assert!(!operators.may_send(kind, Some("OPS")));
            assert!(!operators.may_send(kind, None));
            assert!(Operators::anyone().may_send(kind, None));
        }
        // Upstream commands need no proof at all.
        for kind in CommandType::ALL {
            if !kind.operator_only() {
                assert!(operators.may_send(kind, None), "{kind:?}");
            }
        }
    }
}
