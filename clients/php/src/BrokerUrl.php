<?php

declare(strict_types=1);

namespace PlusPay;

/** One broker's `amqp://` or `amqps://` URL, taken apart. */
final class BrokerUrl
{
    private function __construct(
        public readonly bool $tls,
        public readonly string $host,
        public readonly int $port,
        public readonly string $user,
        public readonly string $password,
        public readonly string $vhost,
    ) {
    }

    /** `amqp[s]://[user[:password]@]host[:port][/vhost]`, the vhost percent-encoded (`%2f` is `/`). */
    public static function parse(string $url): self
    {
        $parts = parse_url($url);
        $scheme = strtolower((string) ($parts['scheme'] ?? ''));
        if ($parts === false || !in_array($scheme, ['amqp', 'amqps'], true) || ($parts['host'] ?? '') === '') {
            throw new \InvalidArgumentException('not an amqp:// or amqps:// URL: ' . self::redact($url));
        }
        $tls = $scheme === 'amqps';
        $path = (string) ($parts['path'] ?? '');
        $vhost = $path === '' || $path === '/' ? '/' : rawurldecode(substr($path, 1));
        return new self(
            $tls,
            trim((string) $parts['host'], '[]'),
            (int) ($parts['port'] ?? ($tls ? 5671 : 5672)),
            isset($parts['user']) ? rawurldecode($parts['user']) : 'guest',
            isset($parts['pass']) ? rawurldecode($parts['pass']) : 'guest',
            $vhost,
        );
    }

    /** For messages: the URL without its password. */
    public function __toString(): string
    {
        return sprintf(
            '%s://%s@%s:%d/%s',
            $this->tls ? 'amqps' : 'amqp',
            rawurlencode($this->user),
            str_contains($this->host, ':') ? "[$this->host]" : $this->host,
            $this->port,
            rawurlencode($this->vhost)
        );
    }

    private static function redact(string $url): string
    {
        // Everything between the user's colon and the last '@' is the password, even one with
        // an unencoded '/', '@' or '#' (such a URL does not parse, and is shown in the error).
        return (string) preg_replace('#//([^:/@]*):.*@#s', '//$1:***@', $url);
    }
}
