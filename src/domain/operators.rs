//! Who may send operator commands (`CommandType::operator_only`): publishers whose messages
//! carry an AMQP `user_id` naming one of the operator users. RabbitMQ refuses a message whose
//! `user_id` is not the user of the connection that published it, so that name is proven by
//! the broker, not claimed by the message.
//!
//! The operator a command names is its own `user_id` field, which the message claims. Where a
//! broker user is bound to operator ids (`security.operator_ids`), its commands may name only
//! those: then two-person control means two broker logins, not two numbers.

use std::collections::BTreeMap;

use crate::domain::command::CommandType;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operators {
    users: Vec<String>,
    /// Every publisher may send operator commands (a deployment whose brokers have one user).
    anyone: bool,
    /// The operator ids some broker users may name; a user not in it may name any.
    ids: BTreeMap<String, Vec<i64>>,
}

impl Operators {
    pub fn only(users: Vec<String>) -> Self {
        Operators {
            users,
            anyone: false,
            ids: BTreeMap::new(),
        }
    }

    pub fn anyone() -> Self {
        Operators {
            users: Vec::new(),
            anyone: true,
            ids: BTreeMap::new(),
        }
    }

    /// Binds broker users to the operator ids their commands may name.
    pub fn with_ids(mut self, ids: BTreeMap<String, Vec<i64>>) -> Self {
        self.ids = ids;
        self
    }

    /// Whether a message of `kind` naming operator `operator` (its `user_id` field), published
    /// as `publisher` (the AMQP `user_id` property), may be applied.
    pub fn may_send(&self, kind: CommandType, operator: i64, publisher: Option<&str>) -> bool {
        if !kind.operator_only() {
            return true;
        }
        let named_allowed =
            |name: &str| self.ids.get(name).is_none_or(|ids| ids.contains(&operator));
        if self.anyone {
            return publisher.is_none_or(named_allowed);
        }
        publisher
            .is_some_and(|name| self.users.iter().any(|user| user == name) && named_allowed(name))
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
            assert!(operators.may_send(kind, 7, Some("ops")));
            assert!(operators.may_send(kind, 7, Some("ops-2")));
            assert!(!operators.may_send(kind, 7, Some("upstream")));
            assert!(!operators.may_send(kind, 7, Some("OPS")));
            assert!(!operators.may_send(kind, 7, None));
            assert!(Operators::anyone().may_send(kind, 7, None));
        }
        // Upstream commands need no proof at all.
        for kind in CommandType::ALL {
            if !kind.operator_only() {
                assert!(operators.may_send(kind, 7, None), "{kind:?}");
            }
        }
    }

    #[test]
    fn a_bound_broker_user_names_only_its_operator_ids() {
        let ids = BTreeMap::from([
            ("ops".to_owned(), vec![91]),
            ("console".to_owned(), vec![92, 93]),
        ]);
        let operators = Operators::only(vec!["ops".into(), "console".into(), "free".into()])
            .with_ids(ids.clone());
        let approve = CommandType::CashApprove;
        assert!(operators.may_send(approve, 91, Some("ops")));
        assert!(!operators.may_send(approve, 92, Some("ops")));
        assert!(operators.may_send(approve, 93, Some("console")));
        assert!(!operators.may_send(approve, 91, Some("console")));
        // An operator user without ids may name any; a bound name still needs to be an operator.
        assert!(operators.may_send(approve, 91, Some("free")));
        let bound_only = Operators::only(vec!["free".into()]).with_ids(ids.clone());
        assert!(!bound_only.may_send(approve, 91, Some("ops")));
        // Upstream commands are not operator commands.
        assert!(operators.may_send(CommandType::Transfer, 5, Some("ops")));
        let anyone = Operators::anyone().with_ids(ids);
        assert!(!anyone.may_send(approve, 92, Some("ops")));
        assert!(anyone.may_send(approve, 92, Some("somebody")));
    }
}
