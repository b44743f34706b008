<?php

declare(strict_types=1);

namespace PlusPay\Exception;

/**
 * No result within the timeout. The command may or may not have been applied (it may be
 * waiting in the queue for a worker): it is safe to send it again with the same idempotency
 * key (getCommandId()) and the same content, which the engine applies at most once and answers
 * with the first copy's result. Never send it again with a new key: that could apply it twice.
 */
final class Timeout extends PlusPayException
{
    public function __construct(
        private readonly string $commandId,
        private readonly float $seconds,
        ?\Throwable $previous = null,
    ) {
        parent::__construct(sprintf(
            'no result for command %s within %.1f s; it is safe to send again with the same idempotency key%s',
            $commandId,
            $seconds,
            $previous === null ? '' : ' (last broker error: ' . $previous->getMessage() . ')'
        ), 0, $previous);
    }

    /** The idempotency key to send the command again with. */
    public function getCommandId(): string
    {
        return $this->commandId;
    }

    public function getSeconds(): float
    {
        return $this->seconds;
    }
}
