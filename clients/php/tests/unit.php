<?php

declare(strict_types=1);

// The client's pieces that need no broker: the result-to-exception mapping, the command's
// encoding, broker URLs and the config. Plain asserts; exits 1 on the first failure.
//
//   php clients/php/tests/unit.php

require __DIR__ . '/../autoload.php';

use PlusPay\BrokerUrl;
use PlusPay\Client;
use PlusPay\Config;
use PlusPay\Exception\CommandRejected;
use PlusPay\Exception\IdempotencyConflict;
use PlusPay\Exception\PlusPayException;

$checks = 0;

function check(bool $ok, string $what): void
{
    global $checks;
    $checks++;
    if (!$ok) {
        fwrite(STDERR, "FAILED: $what\n");
        exit(1);
    }
}

/** @return Throwable|null what $f throws */
function thrown(callable $f): ?Throwable
{
    try {
        $f();
    } catch (Throwable $e) {
        return $e;
    }
    return null;
}

// A succeeded result is a Result.
$json = '{"id":"k1","type":"transfer","user_id":1,"status":"succeeded","message":["转账成功"],"data":{"order":{"id":7}}}';
$result = Client::answer($json);
check($result->id === 'k1' && $result->type === 'transfer' && $result->userId === 1, 'the result envelope');
check($result->message === ['转账成功'] && $result->data['order']['id'] === 7, 'message and data');
check($result->json === $json, 'the published text is kept');

// A rejection is CommandRejected with the code, messages and field errors.
$json = '{"id":"b7","type":"cash","user_id":1,"status":"rejected","code":"insufficient_balance",'
    . '"message":["提现金额超出账户余额"],"errors":{"value":["提现金额超出账户余额"]}}';
$e = thrown(fn () => Client::answer($json));
check($e instanceof CommandRejected && !$e instanceof IdempotencyConflict, 'a rejection throws CommandRejected');
check($e instanceof PlusPayException && $e instanceof RuntimeException, 'under PlusPayException');
check($e->getCode() === 'insufficient_balance' && $e->getRejectionCode() === 'insufficient_balance', 'the code');
check($e->getMessages() === ['提现金额超出账户余额'] && $e->getMessage() === '提现金额超出账户余额', 'the messages');
check($e->getErrors() === ['value' => ['提现金额超出账户余额']], 'the field errors');
check($e->getCommandId() === 'b7' && $e->getResult()['type'] === 'cash' && $e->getResultJson() === $json, 'the whole result');

// Several messages, no errors; idempotency_conflict has its own class.
$e = thrown(fn () => Client::answer('{"id":"x","type":"transfer","user_id":1,"status":"rejected",'
    . '"code":"idempotency_conflict","message":["a","b"]}'));
check($e instanceof IdempotencyConflict && $e instanceof CommandRejected, 'IdempotencyConflict');
check($e->getMessage() === "a\nb" && $e->getErrors() === [], 'joined messages, no errors');

// What is not a result.
foreach (['nope', '[1]', '{"status":"maybe"}'] as $bad) {
    $e = thrown(fn () => Client::answer($bad));
    check($e instanceof PlusPayException && !$e instanceof CommandRejected, "not a result: $bad");
}

// The command's JSON: the contract's envelope, `{}` for no data, text as it is.
check(
    Client::encodeCommand('k-1', 'wallet.get', 3, []) === '{"id":"k-1","type":"wallet.get","user_id":3,"data":{}}',
    'empty data is an object'
);
check(
    Client::encodeCommand('k:2', 'reward', 3, ['user' => 4, 'amount' => 5, 'body' => '谢谢/ok'])
        === '{"id":"k:2","type":"reward","user_id":3,"data":{"user":4,"amount":5,"body":"谢谢/ok"}}',
    'data fields'
);
foreach (['', 'a b', str_repeat('a', 129), "k\0"] as $bad) {
    check(thrown(fn () => Client::encodeCommand($bad, 'transfer', 1, [])) instanceof InvalidArgumentException, "bad key " . json_encode($bad));
}
check(thrown(fn () => Client::encodeCommand('k', 'transfer', 0, [])) instanceof InvalidArgumentException, 'user 0');
check(strlen(Client::newKey()) === 36 && preg_match(Client::KEY_PATTERN, Client::newKey()) === 1, 'a new key is valid');
check(Client::newKey() !== Client::newKey(), 'new keys differ');

// Broker URLs.
$u = BrokerUrl::parse('amqp://up%40s:p%2Fw@rabbit.internal:5673/%2f');
check(!$u->tls && $u->host === 'rabbit.internal' && $u->port === 5673, 'host and port');
check($u->user === 'up@s' && $u->password === 'p/w' && $u->vhost === '/', 'user, password, vhost decoded');
check(!str_contains((string) $u, 'p%2Fw') && !str_contains((string) $u, 'p/w'), 'no password in messages');
$u = BrokerUrl::parse('amqps://mq.example.com/prod');
check($u->tls && $u->port === 5671 && $u->vhost === 'prod' && $u->user === 'guest', 'amqps defaults');
check(BrokerUrl::parse('amqp://h')->vhost === '/', 'no path is the default vhost');
$e = thrown(fn () => BrokerUrl::parse('http://u:secret@h/'));
check($e instanceof InvalidArgumentException && !str_contains($e->getMessage(), 'secret'), 'not AMQP, password hidden');
$e = thrown(fn () => BrokerUrl::parse('amqp://u:se/cr@t#x@h:5672/%2f'));
check($e instanceof InvalidArgumentException && !str_contains($e->getMessage(), 'se/cr') && !str_contains($e->getMessage(), 't#x'), 'an unparsable URL: its password hidden');

// The config: several URLs as a list or comma-separated, from an array as Laravel's config.
$c = Config::fromArray(['urls' => 'amqp://a:1/%2f, amqp://b:2/%2f', 'namespace' => 'ns', 'timeout' => 3]);
check(count($c->brokers) === 2 && $c->brokers[1]->host === 'b' && $c->commandsExchange() === 'ns.commands', 'config');
check($c->timeout === 3.0 && $c->caFile === null && $c->setUserId, 'config defaults');
check(thrown(fn () => new Config([])) instanceof InvalidArgumentException, 'no URL');
check(thrown(fn () => new Config('amqps://h', caFile: '/nonexistent.pem')) instanceof InvalidArgumentException, 'a missing CA file');

// Every command type of the contract has its method.
$contract = (string) file_get_contents(__DIR__ . '/../../../docs/schemas/command.schema.json');
$types = json_decode($contract, true)['properties']['type']['enum'];
$source = (string) file_get_contents(__DIR__ . '/../src/Commands.php');
foreach ($types as $type) {
    check(str_contains($source, "\$this->send('$type',"), "a method for $type");
    $method = lcfirst(str_replace(' ', '', ucwords(str_replace(['.', '_'], ' ', $type))));
    check(method_exists(Client::class, $method), "method $method for $type");
}

echo "ok: $checks checks\n";
