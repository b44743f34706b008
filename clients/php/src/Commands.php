<?php

declare(strict_types=1);

namespace PlusPay;

/**
 * One method per command type of docs/CONTRACT.md, each with the acting user's id, the
 * command's data fields as parameters (named as the contract names them, in camelCase), an
 * optional idempotency key (a new one when null) and an optional timeout (seconds). A null
 * optional field is left out of the command. Each returns the `succeeded` Result or throws as
 * Client::send() does (CommandRejected, Timeout, ConnectionFailed, PublishFailed).
 *
 * Generated from the contract's command tables; keep it in step with them.
 */
trait Commands
{
    // §1: the wallet with the platform holding the money (and §4 where noted)

    /**
     * `recharge`: A recharge through Ping++ (POST /api/v2/plus-pay/recharge). With the platform
     * holding the money: `type` (the channel), `amount`, `extra`, `client_ip`, and with
     * `pingpp.recharge_mode = "recharge_object"` also `user_fee` or `balance_bonus`,
     * `description`, `metadata`, `time_expire`; with custody at Ping++: `amount` and `return_url`.
     */
    public function recharge(
        int $userId,
        int $amount,
        ?string $type = null,
        array|object|null $extra = null,
        ?string $clientIp = null,
        ?int $userFee = null,
        ?int $balanceBonus = null,
        ?string $description = null,
        array|object|null $metadata = null,
        ?int $timeExpire = null,
        ?string $returnUrl = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'amount' => $amount,
            'type' => $type,
            'extra' => $extra,
            'client_ip' => $clientIp,
            'user_fee' => $userFee,
            'balance_bonus' => $balanceBonus,
            'description' => $description,
            'metadata' => $metadata,
            'time_expire' => $timeExpire,
            'return_url' => $returnUrl,
        ]);
        return $this->send('recharge', $userId, $data, $key, $timeout);
    }

    /**
     * `recharge.retrieve`: Asks Ping++ for a recharge order's charge (or deposit) and applies what
     * it says.
     */
    public function rechargeRetrieve(
        int $userId,
        int $order,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'order' => $order,
        ]);
        return $this->send('recharge.retrieve', $userId, $data, $key, $timeout);
    }

    /**
     * `recharge.refund`: Gives part or all of a succeeded recharge back through its Ping++
     * charge; the money leaves the wallet at once (platform custody only).
     */
    public function rechargeRefund(
        int $userId,
        int $order,
        int $amount,
        string $description,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'order' => $order,
            'amount' => $amount,
            'description' => $description,
        ]);
        return $this->send('recharge.refund', $userId, $data, $key, $timeout);
    }

    /**
     * `cash`: A cash request (POST /api/v2/plus-pay/cashes): `value`, `type`, `account`; with
     * custody at Ping++ `value` and `return_url`.
     */
    public function cash(
        int $userId,
        int $value,
        ?string $type = null,
        ?string $account = null,
        ?string $returnUrl = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'value' => $value,
            'type' => $type,
            'account' => $account,
            'return_url' => $returnUrl,
        ]);
        return $this->send('cash', $userId, $data, $key, $timeout);
    }

    /**
     * `cash.approve`: An operator approves a cash request (the acting user is the operator; the
     * broker user must be in `security.operator_users`).
     */
    public function cashApprove(
        int $userId,
        int $cash,
        string $remark,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'cash' => $cash,
            'remark' => $remark,
        ]);
        return $this->send('cash.approve', $userId, $data, $key, $timeout);
    }

    /**
     * `cash.reject`: An operator rejects a cash request, which returns the money.
     */
    public function cashReject(
        int $userId,
        int $cash,
        string $remark,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'cash' => $cash,
            'remark' => $remark,
        ]);
        return $this->send('cash.reject', $userId, $data, $key, $timeout);
    }

    /**
     * `cash.retrieve`: An operator reads a cash record and its Ping++ withdrawal as Ping++ sees it
     * now.
     */
    public function cashRetrieve(
        int $userId,
        int $cash,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'cash' => $cash,
        ]);
        return $this->send('cash.retrieve', $userId, $data, $key, $timeout);
    }

    /**
     * `transfer`: A transfer of `amount` fen to user `user` (POST /api/v2/plus-pay/transfer).
     */
    public function transfer(
        int $userId,
        int $user,
        int $amount,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'user' => $user,
            'amount' => $amount,
        ]);
        return $this->send('transfer', $userId, $data, $key, $timeout);
    }

    /**
     * `reward`: A reward (tip) of `amount` fen to user `user`; with custody at Ping++ also
     * `return_url` and `client_ip`.
     */
    public function reward(
        int $userId,
        int $user,
        int $amount,
        ?string $body = null,
        ?string $returnUrl = null,
        ?string $clientIp = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'user' => $user,
            'amount' => $amount,
            'body' => $body,
            'return_url' => $returnUrl,
            'client_ip' => $clientIp,
        ]);
        return $this->send('reward', $userId, $data, $key, $timeout);
    }

    /**
     * `transform`: Turns `amount` fen of the balance into points (POST /plus-pay/transform).
     */
    public function transform(
        int $userId,
        int $amount,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'amount' => $amount,
        ]);
        return $this->send('transform', $userId, $data, $key, $timeout);
    }

    /**
     * `orders.list`: The user's wallet orders, newest first (GET /api/v2/plus-pay/orders);
     * `action` is `income` or `expenses`.
     */
    public function ordersList(
        int $userId,
        ?int $limit = null,
        ?int $after = null,
        ?string $action = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'limit' => $limit,
            'after' => $after,
            'action' => $action,
        ]);
        return $this->send('orders.list', $userId, $data, $key, $timeout);
    }

    /**
     * `orders.get`: One wallet order of the user (GET /api/v2/plus-pay/orders/{order}).
     */
    public function ordersGet(
        int $userId,
        int $order,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'order' => $order,
        ]);
        return $this->send('orders.get', $userId, $data, $key, $timeout);
    }

    /**
     * `cashes.list`: The user's cash requests (GET /api/v2/plus-pay/cashes).
     */
    public function cashesList(
        int $userId,
        ?int $limit = null,
        ?int $after = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'limit' => $limit,
            'after' => $after,
        ]);
        return $this->send('cashes.list', $userId, $data, $key, $timeout);
    }

    /**
     * `charges.list`: The older wallet API's charge records (GET /wallet/charges); `action` 0
     * expenses, 1 income.
     */
    public function chargesList(
        int $userId,
        ?int $limit = null,
        ?int $after = null,
        ?int $action = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'limit' => $limit,
            'after' => $after,
            'action' => $action,
        ]);
        return $this->send('charges.list', $userId, $data, $key, $timeout);
    }

    /**
     * `charges.get`: One charge record (GET /wallet/charges/:charge).
     */
    public function chargesGet(
        int $userId,
        int $charge,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'charge' => $charge,
        ]);
        return $this->send('charges.get', $userId, $data, $key, $timeout);
    }

    /**
     * `wallet.get`: The wallet: balance, totals, points and the wallet's settings (GET /wallet);
     * with `at` (`YYYY-MM-DD HH:MM:SS`, UTC) the balance, held money, points and version as they
     * stood then (platform custody).
     */
    public function walletGet(
        int $userId,
        ?string $at = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'at' => $at,
        ]);
        return $this->send('wallet.get', $userId, $data, $key, $timeout);
    }

    // §4: custody at Ping++ (`wallet.custody = "pingpp"`)

    /**
     * `account.open`: Applies for the user's Ping++ e-wallet.
     */
    public function accountOpen(
        int $userId,
        string $certType,
        string $certName,
        string $certNumber,
        string $mobile,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'cert_type' => $certType,
            'cert_name' => $certName,
            'cert_number' => $certNumber,
            'mobile' => $mobile,
        ]);
        return $this->send('account.open', $userId, $data, $key, $timeout);
    }

    /**
     * `account.get`: The user's Ping++ user, application, ledger balance and difference.
     */
    public function accountGet(
        int $userId,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = [];
        return $this->send('account.get', $userId, $data, $key, $timeout);
    }

    /**
     * `account.cards`: A link for the user to manage their bank cards.
     */
    public function accountCards(
        int $userId,
        string $returnUrl,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'return_url' => $returnUrl,
        ]);
        return $this->send('account.cards', $userId, $data, $key, $timeout);
    }

    /**
     * `upload_pic`: Uploads a picture (base64) for a merchant application.
     */
    public function uploadPic(
        int $userId,
        string $pic,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'pic' => $pic,
        ]);
        return $this->send('upload_pic', $userId, $data, $key, $timeout);
    }

    /**
     * `card_bin`: The bank of a card number.
     */
    public function cardBin(
        int $userId,
        string $account,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'account' => $account,
        ]);
        return $this->send('card_bin', $userId, $data, $key, $timeout);
    }

    /**
     * `merchant.create`: Makes the user's Ping++ sub-merchant.
     */
    public function merchantCreate(
        int $userId,
        string $displayName,
        ?string $description = null,
        array|object|null $metadata = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'display_name' => $displayName,
            'description' => $description,
            'metadata' => $metadata,
        ]);
        return $this->send('merchant.create', $userId, $data, $key, $timeout);
    }

    /**
     * `merchant.get`: The user's sub-merchant and its applications.
     */
    public function merchantGet(
        int $userId,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = [];
        return $this->send('merchant.get', $userId, $data, $key, $timeout);
    }

    /**
     * `merchant.apply`: The sub-merchant's application: `kind` (`enterprise` or `micro`) and its
     * fields (`business_license`, `legal_person_id_card`, ...), nested as the document nests them,
     * in `application`.
     */
    public function merchantApply(
        int $userId,
        string $kind,
        array $application,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'kind' => $kind,
        ]);
        $data += $application;
        return $this->send('merchant.apply', $userId, $data, $key, $timeout);
    }

    /**
     * `merchant.application.get`: One application, by Ping++'s id.
     */
    public function merchantApplicationGet(
        int $userId,
        string $application,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'application' => $application,
        ]);
        return $this->send('merchant.application.get', $userId, $data, $key, $timeout);
    }

    /**
     * `merchant.settle_account`: The sub-merchant's settle account: `recipient` (`account`,
     * `type`, `open_bank`?, `open_bank_code`?).
     */
    public function merchantSettleAccount(
        int $userId,
        array|object $recipient,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'recipient' => $recipient,
        ]);
        return $this->send('merchant.settle_account', $userId, $data, $key, $timeout);
    }

    /**
     * `order.create`: A purchase from a seller's sub-merchant.
     */
    public function orderCreate(
        int $userId,
        int $seller,
        int $amount,
        string $subject,
        string $body,
        string $clientIp,
        ?bool $allocation = null,
        ?int $timeExpire = null,
        ?string $description = null,
        array|object|null $metadata = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'seller' => $seller,
            'amount' => $amount,
            'subject' => $subject,
            'body' => $body,
            'client_ip' => $clientIp,
            'allocation' => $allocation,
            'time_expire' => $timeExpire,
            'description' => $description,
            'metadata' => $metadata,
        ]);
        return $this->send('order.create', $userId, $data, $key, $timeout);
    }

    /**
     * `order.pay`: Pays a purchase: `channel` `balance` or a `yeepay_*` channel.
     */
    public function orderPay(
        int $userId,
        int $order,
        string $channel,
        ?int $chargeAmount = null,
        array|object|null $extra = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'order' => $order,
            'channel' => $channel,
            'charge_amount' => $chargeAmount,
            'extra' => $extra,
        ]);
        return $this->send('order.pay', $userId, $data, $key, $timeout);
    }

    /**
     * `order.get`: A purchase and its Ping++ order.
     */
    public function orderGet(
        int $userId,
        int $order,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'order' => $order,
        ]);
        return $this->send('order.get', $userId, $data, $key, $timeout);
    }

    /**
     * `order.refund`: The seller refunds (part of) a purchase.
     */
    public function orderRefund(
        int $userId,
        int $order,
        int $amount,
        string $description,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'order' => $order,
            'amount' => $amount,
            'description' => $description,
        ]);
        return $this->send('order.refund', $userId, $data, $key, $timeout);
    }

    /**
     * `order.refunds`: A purchase's refunds.
     */
    public function orderRefunds(
        int $userId,
        int $order,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'order' => $order,
        ]);
        return $this->send('order.refunds', $userId, $data, $key, $timeout);
    }

    /**
     * `order.refund.get`: One refund of a purchase, by Ping++'s id.
     */
    public function orderRefundGet(
        int $userId,
        int $order,
        string $refund,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'order' => $order,
            'refund' => $refund,
        ]);
        return $this->send('order.refund.get', $userId, $data, $key, $timeout);
    }

    /**
     * `allocation.create`: Splits a paid split order: `recipients` is a list of `[user, amount,
     * description?]` objects.
     */
    public function allocationCreate(
        int $userId,
        int $order,
        array $recipients,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'order' => $order,
            'recipients' => $recipients,
        ]);
        return $this->send('allocation.create', $userId, $data, $key, $timeout);
    }

    /**
     * `allocation.get`: One allocation (or completion), by Ping++'s id.
     */
    public function allocationGet(
        int $userId,
        string $allocation,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'allocation' => $allocation,
        ]);
        return $this->send('allocation.get', $userId, $data, $key, $timeout);
    }

    /**
     * `allocation.refund`: Takes shares of an allocation back: `senders` is a list of `[user,
     * amount, description?]` objects.
     */
    public function allocationRefund(
        int $userId,
        string $allocation,
        array $senders,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'allocation' => $allocation,
            'senders' => $senders,
        ]);
        return $this->send('allocation.refund', $userId, $data, $key, $timeout);
    }

    /**
     * `allocation.complete`: Completes a split order: what is still held goes to the seller.
     */
    public function allocationComplete(
        int $userId,
        int $order,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'order' => $order,
        ]);
        return $this->send('allocation.complete', $userId, $data, $key, $timeout);
    }

    // §5: holds, frozen wallets and daily limits, with the platform holding the money

    /**
     * `hold.create`: Sets `amount` fen of the user's wallet aside for `reason` (a bounty, a paid
     * post's purchase) for `expiresIn` seconds, in their held balance.
     */
    public function holdCreate(
        int $userId,
        int $amount,
        string $reason,
        int $expiresIn,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'amount' => $amount,
            'reason' => $reason,
            'expires_in' => $expiresIn,
        ]);
        return $this->send('hold.create', $userId, $data, $key, $timeout);
    }

    /**
     * `hold.capture`: Pays `amount` fen of an open hold to user `user`; the rest goes back to the
     * owner.
     */
    public function holdCapture(
        int $userId,
        int $hold,
        int $user,
        int $amount,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'hold' => $hold,
            'user' => $user,
            'amount' => $amount,
        ]);
        return $this->send('hold.capture', $userId, $data, $key, $timeout);
    }

    /**
     * `hold.release`: Gives an open hold's money back to its owner.
     */
    public function holdRelease(
        int $userId,
        int $hold,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'hold' => $hold,
        ]);
        return $this->send('hold.release', $userId, $data, $key, $timeout);
    }

    /**
     * `redpacket.create`: A red packet of `total` fen in `count` shares (`mode` `equal` or
     * `random`), open for `expiresIn` seconds, for `users` only when given; what is not claimed
     * comes back at expiry.
     *
     * @param list<int>|null $users
     */
    public function redpacketCreate(
        int $userId,
        int $total,
        int $count,
        string $mode,
        int $expiresIn,
        ?array $users = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'total' => $total,
            'count' => $count,
            'mode' => $mode,
            'expires_in' => $expiresIn,
            'users' => $users,
        ]);
        return $this->send('redpacket.create', $userId, $data, $key, $timeout);
    }

    /**
     * `redpacket.claim`: One share of red packet `redpacket` for the acting user, once.
     */
    public function redpacketClaim(
        int $userId,
        int $redpacket,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'redpacket' => $redpacket,
        ]);
        return $this->send('redpacket.claim', $userId, $data, $key, $timeout);
    }

    /**
     * `redpacket.get`: A red packet and who claimed what.
     */
    public function redpacketGet(
        int $userId,
        int $redpacket,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'redpacket' => $redpacket,
        ]);
        return $this->send('redpacket.get', $userId, $data, $key, $timeout);
    }

    /**
     * `wallet.changes`: The wallet's versions after `since` (the last one you have, 0 for none),
     * in version order, at most `limit` (20 unless given, at most 100): each with the balance
     * after it, the amount, the journal and the user's order of it. `unit` `point` pages
     * through the points account's versions instead (`fen`, the wallet, unless given), as
     * the `wallet.changed` events of that unit number them.
     */
    public function walletChanges(
        int $userId,
        int $since,
        ?int $limit = null,
        ?string $unit = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'since' => $since,
            'limit' => $limit,
            'unit' => $unit,
        ]);
        return $this->send('wallet.changes', $userId, $data, $key, $timeout);
    }

    /**
     * `wallet.statement`: The wallet from `from` (included) to `to` (not included), both
     * `YYYY-MM-DD HH:MM:SS` UTC: the opening balance, every entry with its version and order,
     * and the closing balance; at most 1,000 entries (code statement_too_long beyond).
     */
    public function walletStatement(
        int $userId,
        string $from,
        string $to,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'from' => $from,
            'to' => $to,
        ]);
        return $this->send('wallet.statement', $userId, $data, $key, $timeout);
    }

    /**
     * `wallet.proof`: The wallet's head as the Merkle root of `day` (`YYYY-MM-DD`, UTC) covers
     * it, and the path from its leaf to the root: `{root, head, path}`. Check it against the
     * root the `ledger.root` event published (docs/CONTRACT.md §5, Daily roots).
     */
    public function walletProof(
        int $userId,
        string $day,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'day' => $day,
        ]);
        return $this->send('wallet.proof', $userId, $data, $key, $timeout);
    }

    /**
     * `wallet.freeze`: An operator freezes user `user`'s wallet: it sends nothing until unfrozen.
     */
    public function walletFreeze(
        int $userId,
        int $user,
        string $reason,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'user' => $user,
            'reason' => $reason,
        ]);
        return $this->send('wallet.freeze', $userId, $data, $key, $timeout);
    }

    /**
     * `wallet.unfreeze`: An operator unfreezes user `user`'s wallet.
     */
    public function walletUnfreeze(
        int $userId,
        int $user,
        string $reason,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'user' => $user,
            'reason' => $reason,
        ]);
        return $this->send('wallet.unfreeze', $userId, $data, $key, $timeout);
    }

    /**
     * `limits.set`: An operator gives user `user` their own daily limit on command type `type`
     * (count and sum in fen; both null removes it, and the settings' applies again).
     */
    public function limitsSet(
        int $userId,
        int $user,
        string $type,
        ?int $dailyCount = null,
        ?int $dailyAmount = null,
        ?string $key = null,
        ?float $timeout = null,
    ): Result {
        $data = self::fields([
            'user' => $user,
            'type' => $type,
            'daily_count' => $dailyCount,
            'daily_amount' => $dailyAmount,
        ]);
        return $this->send('limits.set', $userId, $data, $key, $timeout);
    }

    /**
     * The fields without the null ones; an empty array given for an object becomes `{}`.
     *
     * @param array<string, mixed> $fields
     * @return array<string, mixed>
     */
    private static function fields(array $fields): array
    {
        $data = [];
        foreach ($fields as $name => $value) {
            if ($value === null) {
                continue;
            }
            $data[$name] = $value === [] && in_array($name, ['extra', 'metadata', 'recipient'], true)
                ? new \stdClass()
                : $value;
        }
        return $data;
    }
}
