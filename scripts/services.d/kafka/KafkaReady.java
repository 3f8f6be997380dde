/*
 * KafkaReady: readiness check of the local Kafka broker (scripts/services kafka).
 * Sends real metadata requests with the Admin client: DescribeCluster (a broker answers and a
 * controller is elected) and ListTopics, retried until they succeed or the time runs out.
 *
 * Usage: java -cp <kafka jars> KafkaReady <bootstrap servers> <timeout seconds>
 * Exit 0 when ready (prints one line), 1 when not ready in time.
 */

import java.util.Collection;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.Node;

public final class KafkaReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = args.length > 0 ? args[0] : "127.0.0.1:19092";
        long timeoutMs = (long) (Double.parseDouble(args.length > 1 ? args[1] : "10") * 1000);
        long deadline = System.currentTimeMillis() + timeoutMs;
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "4000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "opsassist-ready");
        String last = "no answer";
        try (Admin admin = Admin.create(props)) {
            while (true) {
                try {
                    DescribeClusterResult cluster = admin.describeCluster();
                    Collection<Node> nodes = cluster.nodes().get(4, TimeUnit.SECONDS);
                    Node controller = cluster.controller().get(4, TimeUnit.SECONDS);
                    int topics = admin.listTopics().names().get(4, TimeUnit.SECONDS).size();
                    if (!nodes.isEmpty() && controller != null && !controller.isEmpty()) {
                        System.out.println("kafka ready: cluster " + cluster.clusterId().get() + ", "
                            + nodes.size() + " broker(s), " + topics + " topic(s)");
                        return;
                    }
                    last = "no broker or controller in metadata";
                } catch (Exception e) {
                    last = String.valueOf(e.getCause() != null ? e.getCause() : e);
                }
                if (System.currentTimeMillis() + 500 > deadline) {
                    break;
                }
                Thread.sleep(500);
            }
        }
        System.err.println("kafka not ready at " + bootstrap + ": " + last);
        System.exit(1);
    }
}
