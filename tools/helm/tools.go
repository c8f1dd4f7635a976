//go:build tools

// Pins the Helm release that renders deploy/helm/sandman into deploy/manifests for the tests.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
