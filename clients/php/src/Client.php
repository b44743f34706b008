<?php

declare(strict_types=1);

namespace PlusPay;

use PhpAmqpLib\Channel\AMQPChannel;
use PhpAmqpLib\Connection\AbstractConnection;
use PhpAmqpLib\Connection\AMQPConnectionConfig;
use PhpAmqpLib\Connection\AMQPConnectionFactory;
use PhpAmqpLib\Exception\AMQPExceptionInterface;
use PhpAmqpLib\Exception\AMQPProtocolChannelException;
use PhpAmqpLib\Exception\AMQPTimeoutException;
use PhpAmqpLib\Message\AMQPMessage;
use PlusPay\Exception\CommandRejected;
use PlusPay\Exception\ConnectionFailed;
use PlusPay\Exception\PlusPayException;
use PlusPay\Exception\PublishFailed;
use PlusPay\Exception\Timeout;

/**
 * pluspay's client: publishes one command at a time to `<namespace>.commands` (routing key =
 * its type, persistent JSON, mandatory, with publisher confirms) with a private reply queue of
 * its connection as `reply_to`, and waits for the command's result there.
 *
 * Each command has an idempotency key, the command's `id`: the caller's (`key:`), or a new
 * random one. A command answered `succeeded` returns its Result; `rejected` throws
 * CommandRejected (IdempotencyConflict for that code). When no result comes in time it throws
 * Timeout: the command is then safe to send again with the same key and content.
 *
 * The connection is opened on the first command and kept for the next ones. When it is lost
 * before the result came, the same command (same id) is published again on the next broker of
 * the list that answers: the engine applies it once and answers every copy with one result.
 *
 * Not safe to share between processes (PHP-FPM workers each make their own).
 */
final class Client
{
    use Commands;

    /** The idempotency key's alphabet and length, as the contract has it. */
    public const KEY_PATTERN = '/\A[A-Za-z0-9._:-]{1,128}\z/';

    private readonly Config $config;
    private ?AbstractConnection $connection = null;
    private ?AMQPChannel $channel = null;
    private ?string $replyQueue = null;
    private ?BrokerUrl $broker = null;
    /** The broker tried first on the next connect. */
    private int $next;
    /** The command whose result is awaited, and what came for it. */
    private ?string $awaiting = null;
    private ?string $received = null;
    private ?string $returned = null;
    private bool $nacked = false;

    /** @param Config|array<string, mixed> $config */
    public function __construct(Config|array $config)
    {
        $this->config = $config instanceof Config ? $config : Config::fromArray($config);
        // Clients spread over the brokers; each moves on to the next one when its broker goes.
        $this->next = random_int(0, count($this->config->brokers) - 1);
    }

    public function __destruct()
    {
        $this->close();
    }

    public function config(): Config
    {
        return $this->config;
    }

    /** A new random idempotency key (a UUID v4). */
    public static function newKey(): string
    {
        $bytes = random_bytes(16);
        $bytes[6] = chr((ord($bytes[6]) & 0x0f) | 0x40);
        $bytes[8] = chr((ord($bytes[8]) & 0x3f) | 0x80);
        return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($bytes), 4));
    }

    /**
     * The command's JSON, checked as the engine would check its envelope.
     *
     * @param array<string, mixed>|object $data
     */
    public static function encodeCommand(string $id, string $type, int $userId, array|object $data): string
    {
        if (preg_match(self::KEY_PATTERN, $id) !== 1) {
            throw new \InvalidArgumentException('an idempotency key is 1 to 128 characters of A-Z a-z 0-9 . _ : -');
        }
        if ($type === '') {
            throw new \InvalidArgumentException('the command type is empty');
        }
        if ($userId <= 0) {
            throw new \InvalidArgumentException('the acting user id must be a positive integer');
        }
        $command = ['id' => $id, 'type' => $type, 'user_id' => $userId, 'data' => self::object($data)];
        return json_encode($command, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES);
    }

    /**
     * Sends one command and waits for its result.
     *
     * @param array<string, mixed>|object $data the command's data fields, named as the contract names them
     * @param string|null $key the idempotency key; a new one when null
     * @param float|null $timeout seconds to wait for the result; the config's when null
     * @throws CommandRejected the engine rejected it (final; no money moved)
     * @throws Timeout no result in time: safe to send again with the same key
     * @throws ConnectionFailed no broker could be reached: not published
     * @throws PublishFailed the broker did not take it
     */
    public function send(string $type, int $userId, array|object $data = [], ?string $key = null, ?float $timeout = null): Result
    {
        $id = $key ?? self::newKey();
        $body = self::encodeCommand($id, $type, $userId, $data);
        $timeout ??= $this->config->timeout;
        $deadline = microtime(true) + $timeout;
        $published = false;
        $lost = null;
        while (true) {
            try {
                $this->connect($id, $deadline, $published);
                $this->publish($id, $type, $body, $deadline);
                $published = true;
                return self::answer($this->waitForResult($id, $deadline));
            } catch (AMQPTimeoutException $e) {
                throw new Timeout($id, $timeout, $lost ?? $e);
            } catch (AMQPProtocolChannelException $e) {
                // The broker closed the channel: a missing exchange, a permission, a bad user_id.
                $this->close();
                throw new PublishFailed($id, PublishFailed::REFUSED, $e->getMessage(), $e);
            } catch (AMQPExceptionInterface | \ErrorException $e) {
                // The connection went before the result came: again on the next broker.
                $lost = $e;
                $this->close();
                if (microtime(true) >= $deadline) {
                    throw new Timeout($id, $timeout, $e);
                }
                usleep((int) (1e6 * min(0.2, max(0.0, $deadline - microtime(true)))));
            } finally {
                $this->awaiting = null;
            }
        }
    }

    /** Closes the connection (the next command opens a new one). */
    public function close(): void
    {
        $connection = $this->connection;
        $this->connection = null;
        $this->channel = null;
        $this->replyQueue = null;
        $this->broker = null;
        if ($connection !== null) {
            try {
                $connection->close();
            } catch (\Throwable) {
                // Already gone.
            }
        }
    }

    /** The broker of the open connection, if any (for logs: no password). */
    public function broker(): ?string
    {
        return $this->broker === null ? null : (string) $this->broker;
    }

    /**
     * Connects to the first broker that answers, starting with the next one in turn. When none
     * does: ConnectionFailed if the command was never published, else a retry until the
     * deadline (it may be in a queue already, and its result only a new connection away).
     */
    private function connect(string $id, float $deadline, bool $published): void
    {
        if ($this->connection !== null && $this->connection->isConnected() && $this->channel?->is_open()) {
            return;
        }
        $this->close();
        $failures = [];
        $last = null;
        $brokers = $this->config->brokers;
        for ($i = 0; $i < count($brokers); $i++) {
            $broker = $brokers[($this->next + $i) % count($brokers)];
            $remaining = $deadline - microtime(true);
            if ($remaining <= 0) {
                break;
            }
            try {
                $connection = AMQPConnectionFactory::create($this->connectionConfig($broker, $remaining));
                $channel = $connection->channel();
                $channel->confirm_select();
                $channel->set_nack_handler(function (): void {
                    $this->nacked = true;
                });
                $channel->set_return_listener(function (int $code, string $text, string $exchange, string $routingKey): void {
                    $this->returned = "$code $text (exchange $exchange, routing key $routingKey)";
                });
                // Exclusive and auto-deleted: this connection's alone, gone with it.
                [$queue] = $channel->queue_declare('', false, false, true, true);
                $channel->basic_consume($queue, '', false, true, false, false, function (AMQPMessage $reply): void {
                    $correlation = $reply->has('correlation_id') ? $reply->get('correlation_id') : null;
                    // A result that comes too late for an earlier command is dropped.
                    if ($this->awaiting !== null && $correlation === $this->awaiting) {
                        $this->received = $reply->getBody();
                    }
                });
            } catch (\Exception $e) {
                $failures[] = $broker . ': ' . $e->getMessage();
                $last = $e;
                if (isset($connection)) {
                    try {
                        $connection->close();
                    } catch (\Throwable) {
                    }
                    unset($connection);
                }
                continue;
            }
            $this->connection = $connection;
            $this->channel = $channel;
            $this->replyQueue = $queue;
            $this->broker = $broker;
            $this->next = ($this->next + $i + 1) % count($brokers);
            return;
        }
        $this->next = ($this->next + 1) % count($brokers);
        if (!$published) {
            throw new ConnectionFailed($id, $failures === [] ? ['no time left to connect'] : $failures, $last);
        }
        // Caught by send(), which tries again until the deadline.
        throw new \ErrorException(implode('; ', $failures === [] ? ['no time left to connect'] : $failures));
    }

    private function connectionConfig(BrokerUrl $broker, float $remaining): AMQPConnectionConfig
    {
        $config = new AMQPConnectionConfig();
        $config->setIoType(AMQPConnectionConfig::IO_TYPE_STREAM);
        $config->setHost($broker->host);
        $config->setPort($broker->port);
        $config->setUser($broker->user);
        $config->setPassword($broker->password);
        $config->setVhost($broker->vhost);
        $timeout = max(0.1, min($this->config->connectTimeout, $remaining));
        $config->setConnectionTimeout($timeout);
        $config->setReadTimeout(max(3.0, $this->config->connectTimeout));
        $config->setWriteTimeout(max(3.0, $this->config->connectTimeout));
        $config->setChannelRPCTimeout(max(3.0, $this->config->connectTimeout));
        $config->setHeartbeat(0);
        $config->setConnectionName($this->config->connectionName);
        if ($broker->tls) {
            $config->setIsSecure(true);
            // php-amqplib's default protocol is plain `tcp` even for a secure config; `ssl`
            // makes PHP's stream negotiate TLS (any version the two sides share).
            $config->setNetworkProtocol('ssl');
            $config->setSslVerify(true);
            $config->setSslVerifyName(true);
            if ($this->config->caFile !== null) {
                $config->setSslCaCert($this->config->caFile);
            }
        }
        return $config;
    }

    /** Publishes the command and waits for the broker's confirm. */
    private function publish(string $id, string $type, string $body, float $deadline): void
    {
        \assert($this->channel !== null && $this->broker !== null);
        $properties = [
            'content_type' => 'application/json',
            'delivery_mode' => AMQPMessage::DELIVERY_MODE_PERSISTENT,
            'reply_to' => $this->replyQueue,
            'correlation_id' => $id,
            'message_id' => $id,
        ];
        if ($this->config->setUserId) {
            // The broker checks it against the connection's user: how an operator proves who sends.
            $properties['user_id'] = $this->broker->user;
        }
        $this->awaiting = $id;
        $this->received = null;
        $this->returned = null;
        $this->nacked = false;
        $this->channel->basic_publish(new AMQPMessage($body, $properties), $this->config->commandsExchange(), $type, true);
        $this->channel->wait_for_pending_acks_returns(max(0.001, $deadline - microtime(true)));
        if ($this->returned !== null) {
            throw new PublishFailed($id, PublishFailed::UNROUTABLE, "returned by the broker: $this->returned; is the command type served, and has a worker declared the topology of namespace {$this->config->namespace}?");
        }
        if ($this->nacked) {
            throw new PublishFailed($id, PublishFailed::NACKED, 'the broker nacked it');
        }
    }

    /** The result's JSON text, once it came to the reply queue. */
    private function waitForResult(string $id, float $deadline): string
    {
        \assert($this->channel !== null);
        while ($this->received === null) {
            $remaining = $deadline - microtime(true);
            if ($remaining <= 0) {
                throw new AMQPTimeoutException("no result for $id in time");
            }
            $this->channel->wait(null, false, $remaining);
        }
        return $this->received;
    }

    /**
     * The Result of a `succeeded` result; CommandRejected (or IdempotencyConflict) for a
     * `rejected` one.
     */
    public static function answer(string $json): Result
    {
        try {
            $result = json_decode($json, true, 512, JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new PlusPayException('the result is not JSON: ' . $e->getMessage(), 0, $e);
        }
        if (!is_array($result)) {
            throw new PlusPayException('the result is not a JSON object');
        }
        return match ($result['status'] ?? null) {
            'succeeded' => Result::fromArray($result, $json),
            'rejected' => throw CommandRejected::fromResult($result, $json),
            default => throw new PlusPayException('a result with an unknown status: ' . json_encode($result['status'] ?? null)),
        };
    }

    /**
     * JSON objects stay objects when empty: `{}` rather than `[]`.
     *
     * @param array<string, mixed>|object $value
     */
    private static function object(array|object $value): object|array
    {
        return is_array($value) && $value === [] ? new \stdClass() : $value;
    }
}
