package outbox

import (
	"errors"
	"fmt"
)

// ErrInvalidMessage is matched (errors.Is) by every error Write returns for a message it refuses:
// an oversized one (*TooLargeError), an invalid subject, a nil message.
var ErrInvalidMessage = errors.New("outbox: invalid message")

// TooLargeError is returned by Write for a message whose payload and headers exceed
// WriterConfig.MaxPayload. Nothing of the call is written.
type TooLargeError struct {
	MessageID string
	Subject   string
	Size      int // payload plus headers, in bytes, as NATS counts them
	Limit     int // WriterConfig.MaxPayload
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("outbox: message %s to %s is %d bytes (payload and headers), over the limit of %d bytes (WriterConfig.MaxPayload)",
		e.MessageID, e.Subject, e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrInvalidMessage) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrInvalidMessage }
