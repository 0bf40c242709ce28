// hello: a small HTTP server for fleetbench's build/files example, standard library only.
//
//	hello -addr HOST:PORT [-config FILE] [-index N]
//
// GET / answers with the configured greeting and the node's index; GET /bytes/N answers N bytes.
// The config file holds "key = value" lines ("greeting" is the only key); # starts a comment.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
)

func readConfig(path string) (map[string]string, error) {
	config := map[string]string{"greeting": "hello"}
	if path == "" {
		return config, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for n := 1; scanner.Scan(); n++ {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: expected key = value", path, n)
		}
		config[strings.TrimSpace(key)] = strings.Trim(strings.TrimSpace(value), `"`)
	}
	return config, scanner.Err()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "where to listen")
	configPath := flag.String("config", "", "a file of key = value lines")
	index := flag.Int("index", 0, "this node's index among the servers")
	flag.Parse()
	config, err := readConfig(*configPath)
	if err != nil {
		log.Fatal(err)
	}
	greeting := fmt.Sprintf("%s from node %d\n", config["greeting"], *index)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, greeting)
	})
	mux.HandleFunc("/bytes/", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/bytes/"))
		if err != nil || n < 0 || n > 1<<20 {
			http.Error(w, "bad size", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(make([]byte, n))
	})
	log.Printf("hello listening on %s (greeting %q)", *addr, config["greeting"])
	log.Fatal(http.ListenAndServe(*addr, mux))
}
