//! The one error of applying a command or a Ping++ event, sorted by what the caller should do
//! about it ([`EngineError::is_transient`]: try again later), each with its source kept.
//! Rejections are not errors: they are results.

use tokio_postgres::error::SqlState;

use crate::pingpp::PingppError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// PostgreSQL failed. `transient`: a serialization failure, a deadlock, a lost connection,
    /// the server shutting down or starting up; retried, never a rejection.
    #[error("{}database error: {message}", if *.transient { "transient " } else { "" })]
    Database {
        /// The server's message and SQLSTATE (tokio-postgres alone says only "db error").
        message: String,
        transient: bool,
        #[source]
        source: tokio_postgres::Error,
    },
    /// No pooled connection: transient when the pool is full or closing.
    #[error("database pool: {source}")]
    Pool {
        transient: bool,
        #[source]
        source: deadpool_postgres::PoolError,
    },
    /// Ping++ failed without refusing: unreachable, 5xx, rate limited (transient), or an
    /// answer we can't read.
    #[error("Ping++: {source}")]
    Pingpp {
        #[source]
        source: PingppError,
    },
    /// Ping++ may or may not have acted on this `order_no`, and that can't be found out now:
    /// transient; the command waits.
    #[error("Ping++'s outcome for order_no {order_no} is unknown; waiting to find it out")]
    OutcomeUnknown { order_no: String },
    /// Not the command's fault and not transient: a bug, a broken schema, stored data that
    /// can't be read, Ping++ answering about another object. The command is not acknowledged,
    /// and after the delivery limit it is dead-lettered with this reason.
    #[error("{0}")]
    Broken(String),
}

impl EngineError {
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Database { transient, .. } | EngineError::Pool { transient, .. } => {
                *transient
            }
            EngineError::Pingpp { source } => source.is_transient(),
            EngineError::OutcomeUnknown { .. } => true,
            EngineError::Broken(_) => false,
        }
    }
}

impl From<tokio_postgres::Error> for EngineError {
    fn from(source: tokio_postgres::Error) -> Self {
        let message = match source.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            // tokio-postgres names the kind of failure only ("error performing TLS
            // handshake"); its causes say which (the certificate's issuer is unknown).
            None => {
                let mut message = source.to_string();
                let mut cause = std::error::Error::source(&source);
                while let Some(error) = cause {
                    message.push_str(": ");
                    message.push_str(&error.to_string());
                    cause = error.source();
                }
                message
            }
        };
        EngineError::Database {
            message,
            transient: is_transient(&source),
            source,
        }
    }
}

impl From<deadpool_postgres::PoolError> for EngineError {
    fn from(source: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match source {
            PoolError::Backend(e) => e.into(),
            // The only hook notes which server a new connection reached: its failure is the
            // connection's, and a timeout there is a server that does not answer.
            PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(e)) => e.into(),
            PoolError::PostCreateHook(hook) => EngineError::Pool {
                transient: true,
                source: PoolError::PostCreateHook(hook),
            },
            PoolError::Timeout(_) | PoolError::Closed => EngineError::Pool {
                transient: true,
                source,
            },
            other => EngineError::Pool {
                transient: false,
                source: other,
            },
        }
    }
}

impl From<PingppError> for EngineError {
    fn from(source: PingppError) -> Self {
        EngineError::Pingpp { source }
    }
}

fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let class = &code.code()[..2];
            *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::LOCK_NOT_AVAILABLE
                || *code == SqlState::TOO_MANY_CONNECTIONS
                // 08: connection exception; 57P0x: the server shutting down or starting up.
                || class == "08"
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                // A connection made before a failover reached a server that is now a standby.
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        }
        // No SQLSTATE: the connection itself failed (closed, I/O, refused).
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
    }
}
