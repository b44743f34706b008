<?php

declare(strict_types=1);

namespace PlusPay\Exception;

/**
 * The engine answered the command `rejected`: final, and no money moved. Sending it again with
 * the same idempotency key gets the same rejection; fix the input and use a new key.
 *
 * getCode() is the contract's code (a string such as `insufficient_balance`, as PDOException
 * carries SQLSTATE strings), getMessage() the messages joined by newlines, getMessages() the
 * list, getErrors() the field errors (`{field: [messages]}`), getResult() the whole result.
 */
class CommandRejected extends PlusPayException
{
    /** @var list<string> */
    private array $messages;
    /** @var array<string, list<string>> */
    private array $errors;
    /** @var array<string, mixed> */
    private array $result;

    /**
     * @param array<string, mixed> $result a result with status `rejected`, decoded
     * @param string $json the same as published (JSON text)
     */
    public function __construct(array $result, private readonly string $json = '')
    {
        $messages = array_values(array_map('strval', (array) ($result['message'] ?? [])));
        parent::__construct($messages === [] ? 'rejected' : implode("\n", $messages));
        // A string code, like PDOException's: Exception::$code is untyped.
        $this->code = (string) ($result['code'] ?? '');
        $this->messages = $messages;
        $errors = [];
        foreach ((array) ($result['errors'] ?? []) as $field => $list) {
            $errors[(string) $field] = array_values(array_map(
                static fn ($m): string => is_scalar($m) ? (string) $m : json_encode($m, JSON_UNESCAPED_UNICODE),
                (array) $list
            ));
        }
        $this->errors = $errors;
        $this->result = $result;
    }

    /** The exception for a rejected result: IdempotencyConflict for that code. */
    public static function fromResult(array $result, string $json = ''): self
    {
        return ($result['code'] ?? null) === IdempotencyConflict::CODE
            ? new IdempotencyConflict($result, $json)
            : new self($result, $json);
    }

    /** The contract's code, the same as getCode(). */
    public function getRejectionCode(): string
    {
        return (string) $this->code;
    }

    /** @return list<string> */
    public function getMessages(): array
    {
        return $this->messages;
    }

    /** @return array<string, list<string>> each offending field's messages */
    public function getErrors(): array
    {
        return $this->errors;
    }

    /** @return array<string, mixed> the whole result as the engine published it */
    public function getResult(): array
    {
        return $this->result;
    }

    /** The whole result as the engine published it, as JSON text. */
    public function getResultJson(): string
    {
        return $this->json;
    }

    public function getCommandId(): string
    {
        return (string) ($this->result['id'] ?? '');
    }
}
