//go:build tools

// Package tools pins the Argo commands that tests/argo/build.sh builds, so
// that `go mod tidy` keeps their dependencies in go.mod and go.sum.
package tools

import (
	_ "github.com/argoproj/argo-workflows/v3/cmd/argo"
	_ "github.com/argoproj/argo-workflows/v3/cmd/argoexec"
	_ "github.com/argoproj/argo-workflows/v3/cmd/workflow-controller"
)
