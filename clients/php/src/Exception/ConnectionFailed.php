<?php

declare(strict_types=1);

namespace PlusPay\Exception;

/** No broker of the list could be reached; the command was not published. */
final class ConnectionFailed extends PlusPayException
{
    /** @param list<string> $failures one line per broker tried, passwords left out */
    public function __construct(
        private readonly ?string $commandId,
        private readonly array $failures,
        ?\Throwable $previous = null,
    ) {
        parent::__construct('no broker could be reached: ' . implode('; ', $failures), 0, $previous);
    }

    public function getCommandId(): ?string
    {
        return $this->commandId;
    }

    /** @return list<string> */
    public function getFailures(): array
    {
        return $this->failures;
    }
}
