// stackhub-cri: the few CRI calls scripts/k8s-node.sh makes on the node's own containerd.
// It is built inside the Kubernetes build tree (same go.mod, so no extra module resolution).
//
//	stackhub-cri SOCKET rm-pods   stop and remove every pod sandbox (containerd runs CNI DEL for
//	                              each, which releases its address, veth and iptables rules)
//	stackhub-cri SOCKET images    print "<image id> <repo tag>" for every image
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "stackhub-cri: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		die("usage: stackhub-cri SOCKET rm-pods|images")
	}
	conn, err := grpc.NewClient("unix://"+os.Args[1], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		die("%v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	switch os.Args[2] {
	case "rm-pods":
		rt := runtimeapi.NewRuntimeServiceClient(conn)
		resp, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
		if err != nil {
			die("list pod sandboxes: %v", err)
		}
		failed := false
		for _, p := range resp.Items {
			name := p.Metadata.Namespace + "/" + p.Metadata.Name
			if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				fmt.Fprintf(os.Stderr, "stop %s: %v\n", name, err)
				failed = true
			}
			if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
				fmt.Fprintf(os.Stderr, "remove %s: %v\n", name, err)
				failed = true
				continue
			}
			fmt.Printf("removed pod sandbox %s (%s)\n", name, p.Id[:12])
		}
		if failed {
			os.Exit(1)
		}
	case "images":
		im := runtimeapi.NewImageServiceClient(conn)
		resp, err := im.ListImages(ctx, &runtimeapi.ListImagesRequest{})
		if err != nil {
			die("list images: %v", err)
		}
		for _, i := range resp.Images {
			for _, t := range i.RepoTags {
				fmt.Println(i.Id, t)
			}
		}
	default:
		die("unknown command %q", os.Args[2])
	}
}
