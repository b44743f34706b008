<?php

declare(strict_types=1);

namespace PlusPay\Exception;

/** Everything this client throws about a command, but for invalid arguments. */
class PlusPayException extends \RuntimeException
{
}
