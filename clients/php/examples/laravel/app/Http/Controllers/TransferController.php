<?php

declare(strict_types=1);

namespace App\Http\Controllers;

use Illuminate\Http\JsonResponse;
use Illuminate\Http\Request;
use PlusPay\Client;
use PlusPay\Exception\CommandRejected;
use PlusPay\Exception\IdempotencyConflict;
use PlusPay\Exception\Timeout;

/**
 * POST /api/v2/plus-pay/transfer, as the wallet API has it, served by pluspay.
 *
 * The idempotency key comes from the client app (header `Idempotency-Key`), so that a retried
 * HTTP request is the same command: pluspay applies it once and answers it again. Without one,
 * the client makes a new key and a retried request would be a second transfer.
 */
final class TransferController
{
    public function __construct(private readonly Client $wallet)
    {
    }

    public function store(Request $request): JsonResponse
    {
        $key = $request->header('Idempotency-Key');
        if ($key !== null && preg_match('/\A[A-Za-z0-9._:-]{1,64}\z/', $key) !== 1) {
            return new JsonResponse(['message' => ['Idempotency-Key: 1 to 64 of A-Z a-z 0-9 . _ : -']], 400);
        }
        try {
            $result = $this->wallet->transfer(
                (int) $request->user()->id,
                (int) $request->input('user'),
                (int) $request->input('amount'),
                key: $key === null ? null : 'transfer:' . $request->user()->id . ':' . $key,
            );
        } catch (IdempotencyConflict $e) {
            // That key was used for another transfer.
            return new JsonResponse(['message' => $e->getMessages(), 'code' => $e->getCode()], 409);
        } catch (CommandRejected $e) {
            // Final, no money moved: the wallet API's 422 with its field errors.
            return new JsonResponse([
                'message' => $e->getMessages(),
                'errors' => (object) $e->getErrors(),
                'code' => $e->getCode(),
            ], 422);
        } catch (Timeout $e) {
            // Maybe applied, maybe not yet: the app retries with the same Idempotency-Key.
            return new JsonResponse(['message' => ['请稍后重试'], 'id' => $e->getCommandId()], 503, ['Retry-After' => '2']);
        }
        return new JsonResponse(['message' => $result->message, 'data' => $result->data], 201);
    }
}
