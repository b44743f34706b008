<?php

declare(strict_types=1);

namespace PlusPay\Exception;

/**
 * The idempotency key was already used for a command with other content. That earlier command
 * stands; this one changed nothing. A caller that meant a new command needs a new key.
 */
final class IdempotencyConflict extends CommandRejected
{
    public const CODE = 'idempotency_conflict';
}
