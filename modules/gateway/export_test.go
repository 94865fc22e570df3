package gateway

// PaceBucket and PaceKey let tests seed a token's pacing record (the
// slots of its duplicate-certificate limit) as the gateway stores it.
const PaceBucket = paceBucket

func PaceKey(tokenID string, names []string) string { return paceKey(tokenID, names) }
