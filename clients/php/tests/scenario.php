<?php

declare(strict_types=1);

// One step of the integration tests (tests/it/php_client.rs), against a real engine:
//
//   php scenario.php transfer   PP_USER, PP_TO, PP_AMOUNT, PP_KEY (optional)
//   php scenario.php send       PP_TYPE, PP_USER, PP_DATA (a JSON object), PP_KEY (optional)
//   php scenario.php wallet     PP_USER
//
// with PP_AMQP_URLS (comma-separated), PP_NAMESPACE, PP_TIMEOUT (seconds) and PP_CA_FILE
// (the brokers' CA, for amqps:// URLs). Prints one JSON
// object: {"outcome": "succeeded", "result": ...}, {"outcome": "rejected", "exception": class,
// "code", "message", "errors", "result"}, or {"outcome": "timeout" | "error", "exception",
// "message", "command_id"}. The results are printed as the engine published them.

require __DIR__ . '/../autoload.php';

use PlusPay\Client;
use PlusPay\Config;
use PlusPay\Exception\CommandRejected;
use PlusPay\Exception\Timeout;

function env(string $name, ?string $default = null): string
{
    $value = getenv($name);
    if ($value === false || $value === '') {
        if ($default === null) {
            fwrite(STDERR, "$name is not set\n");
            exit(2);
        }
        return $default;
    }
    return $value;
}

function out(array $fields, ?string $resultJson = null): void
{
    $json = json_encode($fields, JSON_THROW_ON_ERROR | JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES);
    if ($resultJson !== null) {
        $json = substr($json, 0, -1) . ',"result":' . $resultJson . '}';
    }
    echo $json, "\n";
}

$wallet = new Client(new Config(
    urls: env('PP_AMQP_URLS'),
    namespace: env('PP_NAMESPACE'),
    timeout: (float) env('PP_TIMEOUT', '20'),
    caFile: getenv('PP_CA_FILE') ?: null,
));
$key = getenv('PP_KEY') ?: null;
$user = (int) env('PP_USER');

try {
    $result = match ($argv[1] ?? '') {
        'transfer' => $wallet->transfer($user, (int) env('PP_TO'), (int) env('PP_AMOUNT'), key: $key),
        'send' => $wallet->send(env('PP_TYPE'), $user, json_decode(env('PP_DATA', '{}'), true, 512, JSON_THROW_ON_ERROR), $key),
        'wallet' => $wallet->walletGet($user, key: $key),
        default => throw new InvalidArgumentException('unknown step ' . ($argv[1] ?? '')),
    };
    out(['outcome' => 'succeeded', 'class' => get_class($result), 'data' => $result->data], $result->json);
} catch (CommandRejected $e) {
    out([
        'outcome' => 'rejected',
        'exception' => get_class($e),
        'code' => $e->getCode(),
        'message' => $e->getMessages(),
        'errors' => (object) $e->getErrors(),
        'command_id' => $e->getCommandId(),
    ], $e->getResultJson());
} catch (Timeout $e) {
    out(['outcome' => 'timeout', 'exception' => get_class($e), 'message' => $e->getMessage(), 'command_id' => $e->getCommandId()]);
} catch (Throwable $e) {
    out(['outcome' => 'error', 'exception' => get_class($e), 'message' => $e->getMessage()]);
    exit(1);
}
