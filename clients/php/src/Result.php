<?php

declare(strict_types=1);

namespace PlusPay;

/**
 * A `succeeded` result: `data` is what the wallet API's endpoint returns (an order, a cash
 * record, a list, ...), `message` its messages (e.g. ["转账成功"]).
 */
final class Result
{
    /**
     * @param list<string> $message
     * @param array<string, mixed> $raw the whole result, decoded
     * @param string $json the whole result as published (JSON text)
     */
    public function __construct(
        public readonly string $id,
        public readonly string $type,
        public readonly int $userId,
        public readonly array $message,
        public readonly mixed $data,
        public readonly array $raw,
        public readonly string $json = '',
    ) {
    }

    /** @param array<string, mixed> $result */
    public static function fromArray(array $result, string $json = ''): self
    {
        return new self(
            (string) ($result['id'] ?? ''),
            (string) ($result['type'] ?? ''),
            (int) ($result['user_id'] ?? 0),
            array_values(array_map('strval', (array) ($result['message'] ?? []))),
            $result['data'] ?? null,
            $result,
            $json,
        );
    }

    /** @return array<string, mixed> */
    public function toArray(): array
    {
        return $this->raw;
    }
}
