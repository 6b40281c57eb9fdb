// argolint-v4 runs Argo Workflows' own offline linter (what `argo lint
// --offline --strict` does) on manifest files, with Argo v4.0's validation
// rules. The `argo` CLI itself does not build from its Go module (its
// embedded UI is missing from the module zip), so this program calls the
// same package the CLI calls. Templates referenced with templateRef resolve
// only among the files given.
//
// Usage: argolint-v4 FILE... (exit 0: no linting errors; 1: errors, printed
// one per line as "file: in "name" (Kind): error"; 2: bad usage).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/argoproj/argo-workflows/v4/cmd/argo/lint"
	"github.com/argoproj/argo-workflows/v4/pkg/apiclient"
	wf "github.com/argoproj/argo-workflows/v4/pkg/apis/workflow"
)

func main() {
	files := os.Args[1:]
	if len(files) == 0 {
		fmt.Fprintln(os.Stderr, "usage: argolint-v4 FILE...  (Argo v4.0 offline lint of manifests)")
		os.Exit(2)
	}
	ctx, client, err := apiclient.NewClientFromOptsWithContext(context.Background(), apiclient.Opts{
		Offline:      true,
		OfflineFiles: files,
		LogLevel:     "warn",
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "argolint-v4: cannot read the manifests: %v\n", err)
		os.Exit(1)
	}
	kinds := []string{wf.WorkflowPlural, wf.WorkflowTemplatePlural, wf.CronWorkflowPlural, wf.ClusterWorkflowTemplatePlural}
	opts := lint.LintOptions{
		Files:            files,
		Strict:           true,
		DefaultNamespace: "default",
		Printer:          os.Stdout,
	}
	// RunLint exits with status 1 itself when a manifest has linting errors.
	if err := lint.RunLint(ctx, client, kinds, "simple", true, opts); err != nil {
		fmt.Fprintf(os.Stderr, "argolint-v4: %v\n", err)
		os.Exit(1)
	}
}
