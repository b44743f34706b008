<?php

declare(strict_types=1);

namespace PlusPay\Exception;

/**
 * The broker did not take the command: it returned it as unroutable (no queue is bound for its
 * type, e.g. no worker ever declared the topology in this namespace), nacked it, or refused it
 * (an exchange that does not exist, a permission, a `user_id` that is not the connection's).
 * Nothing was applied; it is safe to send again with the same key once the cause is fixed.
 */
final class PublishFailed extends PlusPayException
{
    public const UNROUTABLE = 'unroutable';
    public const NACKED = 'nacked';
    public const REFUSED = 'refused';

    public function __construct(
        private readonly string $commandId,
        private readonly string $reason,
        string $detail,
        ?\Throwable $previous = null,
    ) {
        parent::__construct("command $commandId not published ($reason): $detail", 0, $previous);
    }

    public function getCommandId(): string
    {
        return $this->commandId;
    }

    /** One of UNROUTABLE, NACKED, REFUSED. */
    public function getReason(): string
    {
        return $this->reason;
    }
}
