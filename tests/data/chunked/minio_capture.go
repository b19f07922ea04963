// Sends S3 uploads with minio-go, Debian's golang-github-minio-minio-go-v7-dev,
// to gen.py's capture server; gen.py builds and runs this (GOPATH mode, no
// network). Over plain HTTP minio-go signs every 64 KiB chunk
// (STREAMING-AWS4-HMAC-SHA256-PAYLOAD). Its signed-trailer form
// (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER) is only used with the
// TrailingHeaders option for multipart parts (5 MiB at least), so that one
// goes through minio-go's own streaming signer directly, with the CRC32C
// trailer minio-go computes for parts.
//
// usage: minio_capture HOST:PORT ACCESS_KEY SECRET put:KEY=FILE... trailer:KEY=FILE...
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/signer"
)

const bucket = "nubo-test"

func fatal(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "minio_capture: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 5 {
		fatal("usage: minio_capture HOST:PORT ACCESS_KEY SECRET put:KEY=FILE|trailer:KEY=FILE...")
	}
	host, akid, secret := os.Args[1], os.Args[2], os.Args[3]
	cl, err := minio.New(host, &minio.Options{
		Creds:  credentials.NewStaticV4(akid, secret, ""),
		Secure: false,
		Region: "us-east-1",
	})
	if err != nil {
		fatal("client: %v", err)
	}
	for _, arg := range os.Args[4:] {
		kind, rest, ok := strings.Cut(arg, ":")
		key, file, ok2 := strings.Cut(rest, "=")
		if !ok || !ok2 {
			fatal("bad argument %q", arg)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			fatal("%v", err)
		}
		switch kind {
		case "put":
			_, err = cl.PutObject(context.Background(), bucket, key, bytes.NewReader(data),
				int64(len(data)), minio.PutObjectOptions{ContentType: "application/octet-stream"})
		case "trailer":
			err = putSignedTrailer(host, akid, secret, key, data)
		default:
			fatal("bad kind %q", kind)
		}
		if err != nil {
			fatal("%s %s: %v", kind, key, err)
		}
	}
}

func putSignedTrailer(host, akid, secret, key string, data []byte) error {
	req, err := http.NewRequest(http.MethodPut, "http://"+host+"/"+bucket+"/"+key,
		bytes.NewReader(data))
	if err != nil {
		return err
	}
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
	req.Trailer = http.Header{}
	req.Trailer.Set("x-amz-checksum-crc32c", base64.StdEncoding.EncodeToString(sum[:]))
	req = signer.StreamingSignV4(req, akid, secret, "", "us-east-1", int64(len(data)),
		time.Now().UTC())
	// minio-go sets TransferEncoding "aws-chunked"; net/http drops what is
	// not "chunked" and sends the Content-Length minio-go computed, with no
	// Content-Encoding header: the server knows the body only from
	// x-amz-content-sha256.
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}
