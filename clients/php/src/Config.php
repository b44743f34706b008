<?php

declare(strict_types=1);

namespace PlusPay;

/** How to reach pluspay: the brokers, the namespace, TLS and the timeouts. */
final class Config
{
    /** @var list<BrokerUrl> */
    public readonly array $brokers;

    /**
     * @param list<string>|string $urls broker URLs (`amqp://user:pass@host:5672/%2f`,
     *     `amqps://...` for TLS), tried in turn; a string may list several, comma-separated
     * @param string $namespace the engine's `amqp.namespace`: commands go to `<namespace>.commands`
     * @param float $timeout seconds to wait for a command's result (per call, by default)
     * @param float $connectTimeout seconds for one broker to accept the connection
     * @param string|null $caFile PEM file of the CA that signed the brokers' certificates
     *     (amqps:// only; without it the system's roots); the host name is checked too
     * @param bool $setUserId set each message's AMQP `user_id` to the broker user, which the
     *     broker verifies: how an operator's commands prove who sent them
     */
    public function __construct(
        array|string $urls,
        public readonly string $namespace = 'pluspay',
        public readonly float $timeout = 10.0,
        public readonly float $connectTimeout = 3.0,
        public readonly ?string $caFile = null,
        public readonly bool $setUserId = true,
        public readonly string $connectionName = 'pluspay-php',
    ) {
        if (is_string($urls)) {
            $urls = explode(',', $urls);
        }
        $urls = array_values(array_filter(array_map('trim', $urls), static fn (string $u): bool => $u !== ''));
        if ($urls === []) {
            throw new \InvalidArgumentException('at least one broker URL');
        }
        if ($namespace === '') {
            throw new \InvalidArgumentException('the namespace is empty');
        }
        if ($timeout <= 0 || $connectTimeout <= 0) {
            throw new \InvalidArgumentException('timeouts must be positive');
        }
        if ($caFile !== null && !is_readable($caFile)) {
            throw new \InvalidArgumentException("the CA file $caFile is not readable");
        }
        $this->brokers = array_map([BrokerUrl::class, 'parse'], $urls);
    }

    /**
     * From an array such as a Laravel config file's: `urls` (list or comma-separated string)
     * or `url`, `namespace`, `timeout`, `connect_timeout`, `ca_file`, `set_user_id`,
     * `connection_name`.
     *
     * @param array<string, mixed> $config
     */
    public static function fromArray(array $config): self
    {
        $urls = $config['urls'] ?? $config['url'] ?? [];
        return new self(
            urls: is_array($urls) ? array_map('strval', $urls) : (string) $urls,
            namespace: (string) ($config['namespace'] ?? 'pluspay'),
            timeout: (float) ($config['timeout'] ?? 10.0),
            connectTimeout: (float) ($config['connect_timeout'] ?? 3.0),
            caFile: isset($config['ca_file']) && $config['ca_file'] !== '' ? (string) $config['ca_file'] : null,
            setUserId: (bool) ($config['set_user_id'] ?? true),
            connectionName: (string) ($config['connection_name'] ?? 'pluspay-php'),
        );
    }

    public function commandsExchange(): string
    {
        return $this->namespace . '.commands';
    }
}
