package gateway

import "context"

// PaceBucket and PaceKey let tests seed a token's pacing record (the
// slots of its duplicate-certificate limit) as the gateway stores it.
const PaceBucket = paceBucket

func PaceKey(tokenID string, names []string) string { return paceKey(tokenID, names) }

// ProcessingBucket holds the gateway's processing orders (order ID ->
// record), for tests that look at or seed them.
const ProcessingBucket = processingBucket

// StoredOrder reads an order as smallstep stored it, without the
// gateway's processing view (and without settling it).
func (g *Gateway) StoredOrder(ctx context.Context, id string) (status, certificateID string, err error) {
	o, err := g.db.GetOrder(ctx, id)
	if err != nil {
		return "", "", err
	}
	return string(o.Status), o.CertificateID, nil
}
